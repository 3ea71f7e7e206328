"""``ToDtype``: deliver a field in another dtype than the default, converted from the stored values.

The Loader delivers what standard layers take, whatever is stored: float fields and float64 arrays as
float32, integer arrays wider than a byte (token ids stored as uint16, say) as int64; bytes, uint8 arrays and
booleans stay as they are (``delivery_dtype``). Storage stays compact. ``ToDtype`` as the first op of a
field's transforms changes that: the batch buffer is then allocated in its dtype and filled straight from
the stored values, so ``ToDtype(torch.float64)`` keeps every bit of a float64 column. Anywhere else in the
list it converts the batch tensor, like ``Tensor.to``.

Example:
    >>> import numpy as np, torch
    >>> delivery_dtype(np.dtype("uint16")), delivery_dtype(np.dtype("float64")), delivery_dtype(np.dtype("uint8"))
    (dtype('int64'), dtype('float32'), dtype('uint8'))
    >>> ToDtype(torch.float64).apply(torch.tensor([1, 2]), None).dtype
    torch.float64
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.ops.base import BatchContext, BatchOp


def delivery_dtype(stored: np.dtype) -> np.dtype:
    """The dtype a field stored as ``stored`` is delivered in by default (see the module docstring)."""
    if stored.kind == "f" and stored.itemsize > 4:
        return np.dtype(np.float32)
    if stored.kind in "iu" and stored.itemsize > 1:
        return np.dtype(np.int64)
    return stored


class ToDtype(BatchOp):
    """Deliver the field as ``dtype`` (a torch dtype, a numpy dtype such as ``TokenBlocks.id_dtype``, or a
    dtype name such as ``"float64"``)."""

    def __init__(self, dtype: torch.dtype | np.dtype | str) -> None:
        if isinstance(dtype, np.dtype):
            dtype = str(dtype.newbyteorder("="))
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype, None)  # type: ignore[assignment]
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"ToDtype takes a torch dtype such as torch.float64, got {dtype!r}")
        self.dtype = dtype

    @property
    def numpy_dtype(self) -> np.dtype:
        """The same dtype for the batch buffer (``torch.bfloat16`` has none: it is converted after)."""
        return torch.empty(0, dtype=self.dtype).numpy().dtype

    def output_dtype(self, dtype: Any) -> torch.dtype:
        return self.dtype

    def apply(self, batch: torch.Tensor, context: BatchContext | None) -> torch.Tensor:
        if batch.dtype == self.dtype:  # first in the list: the buffer is already of it (no dispatch to torch)
            return batch
        return batch.to(self.dtype)

    def __repr__(self) -> str:
        return f"ToDtype({self.dtype})"
