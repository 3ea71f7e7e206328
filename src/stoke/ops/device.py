"""``ToDevice``: move a field's batch to a device; the batch ops after it run there.

From the Loader's pinned buffers the copy is asynchronous (``non_blocking``); the Loader records an event
so that a buffer is not refilled before its copy has finished. ``Loader(device=...)`` moves every tensor
field first; put ``ToDevice`` in one field's transforms to choose where in its ops the move happens.

Example:
    >>> import torch
    >>> ToDevice("cpu").apply(torch.zeros(2), None).device.type
    'cpu'
"""

from __future__ import annotations

import torch

from stoke.ops.base import BatchContext, BatchOp


class ToDevice(BatchOp):
    """Move the batch to ``device`` (asynchronously from pinned memory when ``non_blocking``)."""

    def __init__(self, device: str | torch.device, non_blocking: bool = True) -> None:
        self.device = torch.device(device)
        self.non_blocking = non_blocking

    def apply(self, batch: torch.Tensor, context: BatchContext | None) -> torch.Tensor:
        return batch.to(self.device, non_blocking=self.non_blocking)
