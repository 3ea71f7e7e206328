"""Stages for non-image fields: scalars, fixed arrays, variable arrays and bytes, text and JSON.

Fixed-size values (``int``, ``float``, fixed-shape ``ndarray``) are written straight into a preallocated
batch array, in the dtype standard layers take (float32 for floats, int64 for integers wider than a byte;
``stoke.ops.dtype``), converted from the stored values as they are copied. Variable-size values are
kept per sample and padded with zeros to the longest in the batch when the batch is collected, with a
``<name>_lengths`` tensor: shape ``[B]`` for 1-D values (bytes, token lists), ``[B, ndim]`` for more
dimensions. 1-D values (a ``bytes`` field, an ``ndarray`` field of
shape ``(None,)`` such as text tokens) also get an attention mask ``<name>_mask``: bool ``[B, L]``, True
on the real elements and False on the padding. Text and JSON are not tensors: a batch holds a list.
Text fields take text ops (``stoke.ops.text``), run per sample with random numbers from (seed, epoch,
sample index, op position).

Example:
    >>> import numpy as np
    >>> padded, lengths = pad([np.array([1, 2, 3]), np.array([4])], np.dtype("int64"))
    >>> padded.tolist(), lengths.tolist(), attention_mask(lengths, 3).tolist()
    ([[1, 2, 3], [4, 0, 0]], [3, 1], [[True, True, True], [True, False, False]])
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.format.fields import BytesField, Field, NDArrayField, TextField
from stoke.ops.base import BatchOp, Op
from stoke.ops.dtype import ToDtype, delivery_dtype
from stoke.ops.text import TextOp
from stoke.pipeline.buffers import BufferSet
from stoke.rng import sample_uniforms, stream_id


class ValueStage:
    """Produces one non-image field of every batch."""

    def __init__(self, name: str, field: Field, ops: Sequence[Op], packed: bool) -> None:
        self.name = name
        self.field = field
        self.packed = packed
        spec = field.spec
        self.kind = "list" if not spec.is_tensor else "fixed" if spec.is_fixed else "padded"
        if isinstance(field, TextField):
            if any(not isinstance(op, TextOp) for op in ops):
                raise ConfigError(
                    f"transforms[{name!r}] may only hold text ops (such as stoke.ops.RandomSwap) for a text field"
                )
        elif any(not isinstance(op, BatchOp) for op in ops):
            raise ConfigError(
                f"transforms[{name!r}] may only hold batch ops (such as Normalize or ToDevice) "
                f"for a {field.type_name} field"
            )
        elif ops and self.kind == "list":
            raise ConfigError(f"field {name!r} holds {field.type_name} values, which are not tensors; it takes no ops")
        self.text_ops: list[TextOp] = [op for op in ops if isinstance(op, TextOp)]
        self.batch_ops: list[BatchOp] = [op for op in ops if isinstance(op, BatchOp)]
        self.streams = [stream_id(name, position) for position in range(len(self.text_ops))]
        self._shape = tuple(spec.shape or ())
        self._dtype = _delivered(spec.dtype, self.batch_ops)
        self.masked = self.kind == "padded" and spec.shape is not None and len(spec.shape) == 1
        self.clock: Any = None  # a stoke.profile StageClock while profiled, adding to ``slots["decode"]``
        self.slots: dict[str, Any] = {}

    def buffer_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        if self.kind != "fixed":
            return {}
        return {self.name: (self._shape, self._dtype)}  # type: ignore[dict-item]

    def output_names(self) -> list[str]:
        """The batch keys this stage fills."""
        if self.kind != "padded":
            return [self.name]
        return [self.name, f"{self.name}_lengths", *([f"{self.name}_mask"] if self.masked else [])]

    def list_names(self) -> list[str]:
        return [] if self.kind == "fixed" else [self.name]

    def draw(self, seed: int, epoch: int, indices: np.ndarray) -> list[Any]:
        return [
            sample_uniforms(seed, epoch, stream, indices, op.draws) for op, stream in zip(self.text_ops, self.streams)
        ]

    def run(self, value: Any, params: list[Any], j: int, buffers: BufferSet) -> None:
        clock = self.clock
        started = time.perf_counter_ns() if clock is not None else 0
        if not self.packed:
            decoded = self.field.coerce(value)
        elif isinstance(self.field, NDArrayField):
            decoded = self.field.decode_view(value)  # zero-copy: copied once, into the batch
        else:
            decoded = self.field.decode(value)
        for op, uniforms in zip(self.text_ops, params):
            decoded = op.apply_text(decoded, uniforms[j])
        if self.kind == "fixed":
            buffers.arrays[self.name][j, ...] = decoded  # [j, ...] is a view even for 0-d values
        else:
            buffers.lists[self.name][j] = (
                np.frombuffer(decoded, np.uint8) if isinstance(self.field, BytesField) else decoded
            )
        if clock is not None:
            clock.add(self.slots["decode"], time.perf_counter_ns() - started)

    def collect(self, buffers: BufferSet, count: int) -> dict[str, Any]:
        if self.kind == "fixed":
            return {self.name: torch.from_numpy(buffers.arrays[self.name][:count])}
        values = buffers.lists[self.name][:count]
        if self.kind == "list":
            return {self.name: list(values)}
        padded, lengths = pad(values, self._dtype)
        outputs = {self.name: torch.from_numpy(padded), f"{self.name}_lengths": torch.from_numpy(lengths)}
        if self.masked:
            outputs[f"{self.name}_mask"] = torch.from_numpy(attention_mask(lengths, padded.shape[1]))
        return outputs


def _delivered(stored: np.dtype | None, batch_ops: Sequence[BatchOp]) -> np.dtype | None:
    """The batch dtype of a field stored as ``stored``: a leading ``ToDtype``'s, else the default delivery."""
    if stored is None:
        return None
    if batch_ops and isinstance(batch_ops[0], ToDtype):
        try:
            return batch_ops[0].numpy_dtype
        except TypeError:  # no numpy twin (bfloat16): the op converts the default delivery
            pass
    return delivery_dtype(stored)


def pad(arrays: Sequence[np.ndarray], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad arrays of one ndim to a common shape; returns (batch, lengths) as described above."""
    shapes = np.array([array.shape for array in arrays], dtype=np.int64).reshape(len(arrays), -1)
    largest = shapes.max(axis=0) if len(arrays) else np.zeros(shapes.shape[1], np.int64)
    padded = np.zeros((len(arrays), *largest.tolist()), dtype)
    for row, array in zip(padded, arrays):
        row[tuple(slice(0, extent) for extent in array.shape)] = array
    lengths = shapes[:, 0].copy() if shapes.shape[1] == 1 else shapes
    return padded, lengths


def attention_mask(lengths: np.ndarray, width: int) -> np.ndarray:
    """bool ``[B, width]``: True where position < the row's length (the real elements of a padded row)."""
    return np.arange(width, dtype=np.int64)[None, :] < np.asarray(lengths, dtype=np.int64)[:, None]
