"""The copy stream: where a Loader's batches move to a CUDA device and run their batch ops.

Copies issued on the default stream queue behind the training step's kernels, so batch k+1 could not
arrive while batch k computes. The Loader issues each batch's host-to-device copies, and the batch ops
that follow them (a crop, flip, normalisation or MixUp on the device), on one dedicated stream instead,
and records two events there:

* **copied**, right after the copies: the batch's host buffers (pinned, reused, ``stoke.pipeline.buffers``)
  are refilled only once it has passed, never while the DMA engine still reads them;
* **ready**, after the batch ops: when the loop takes the batch, its own stream waits on this event (a
  wait on the GPU; the CPU does not block), and every device tensor of the batch is recorded on the
  loop's stream (``Tensor.record_stream``) so that the caching allocator does not give their memory
  back to the copy stream while the loop still uses it.

The Loader also finishes the next batch as soon as its samples are ready, one batch ahead of the loop,
so the copy of batch k+1 overlaps the compute of batch k even in a loop that synchronises every step
(``loss.item()``). Off CUDA (no device, or the CPU) there is no stream: every method passes straight
through, and the batches are the same.

Not for: deciding what runs on the device (the field's transforms and ``ToDevice`` do), nor pinning
(``stoke.pipeline.buffers``).

Example:
    >>> import torch
    >>> stream = CopyStream(None)
    >>> with stream.issuing():
    ...     batch = {"x": torch.zeros(2)}
    >>> stream.record() is None, stream.hand_over(batch, None) is batch
    (True, True)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


class CopyStream:
    """A dedicated CUDA stream for one Loader's copies and batch ops, or a pass-through off CUDA.

    ``api`` is the module that provides streams (``torch.cuda``); tests give a stand-in to check the order
    of the calls without a GPU.
    """

    def __init__(self, device: torch.device | None, api: Any = None) -> None:
        self.device = device
        self._api = api if api is not None else torch.cuda
        self._stream: Any = None
        if device is not None and device.type == "cuda" and self._api.is_available():
            self._stream = self._api.Stream(device=device)

    @property
    def active(self) -> bool:
        """Whether copies and batch ops go to a stream of their own (a CUDA device)."""
        return self._stream is not None

    @contextlib.contextmanager
    def issuing(self) -> Iterator[None]:
        """Inside: copies and kernels are queued on the copy stream.

        It does not wait for the loop's stream: what it reads is host memory the workers filled and
        tensors it allocates itself, and memory the loop freed is reused only after the loop's work on it
        (``hand_over`` records the loop's use), so the copy can run while the loop's step still computes.
        """
        if self._stream is None:
            yield
            return
        with self._api.stream(self._stream):
            yield

    def record(self) -> Any:
        """An event on the copy stream after everything issued so far (None off CUDA)."""
        if self._stream is None:
            return None
        return self._stream.record_event()

    def hand_over(self, batch: dict[str, Any], ready: Any) -> dict[str, Any]:
        """Make the loop's stream wait for ``ready`` and keep the batch's device memory alive for it."""
        if self._stream is None or ready is None:
            return batch
        current = self._api.current_stream(self.device)
        current.wait_event(ready)
        for value in batch.values():
            if isinstance(value, torch.Tensor) and value.device.type == "cuda":
                value.record_stream(current)
        return batch
