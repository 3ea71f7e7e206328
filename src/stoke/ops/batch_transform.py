"""``BatchTransform``: an op on the whole batch dict, for what needs several fields at once.

``Loader(batch_transforms=[...])`` runs these in order on every batch once it is complete: after each
field's own ops and device moves, with ``index`` (and ``is_padding``) in place. MixUp and CutMix
(``stoke.ops.mix``) are the reason: they mix images *and* labels, so a per-field op cannot express them.
A transform returns a new dict (it may reuse the tensors it does not change) and should not change its
input tensors in place: without a device they are views of the Loader's reusable buffers. Random
choices key on the ``BatchContext`` (seed, epoch, the batch's dataset indices), never on global state,
so batches stay identical across thread counts and resumes. Not for per-image work: that belongs in
``transforms`` (pixel ops), where it runs in parallel.

Example:
    >>> import numpy as np, torch
    >>> from stoke.ops.base import BatchContext
    >>> class Halve(BatchTransform):
    ...     def needs(self):
    ...         return ("x",)
    ...     def apply(self, batch, context):
    ...         return {**batch, "x": batch["x"] / 2}
    >>> Halve().apply({"x": torch.ones(2)}, BatchContext(0, 0, np.arange(2)))["x"].tolist()
    [0.5, 0.5]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from stoke.ops.base import BatchContext, Op


class BatchTransform(Op, ABC):
    """An op on the complete batch dict (see the module docstring)."""

    def needs(self) -> tuple[str, ...]:
        """The batch keys this transform reads; the Loader checks they exist before loading anything."""
        return ()

    @abstractmethod
    def apply(self, batch: dict[str, Any], context: BatchContext) -> dict[str, Any]:
        """The transformed batch (a new dict)."""
