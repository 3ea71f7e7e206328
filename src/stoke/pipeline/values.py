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

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.format.fields import BytesField, TextField
from stoke.ops.base import BatchOp, Op
from stoke.ops.dtype import ToDtype, delivery_dtype
from stoke.ops.text import TextOp
from stoke.pipeline.buffers import BufferSet
from stoke.pipeline.inputs import ValueInput
from stoke.pipeline.timing import Timing
from stoke.rng import sample_uniforms, stream_id


class ValueStage:
    """Produces one non-image field of every batch; a :class:`~stoke.pipeline.stage.FieldStage`.

    ``values`` is how the reader hands out the field's values (``reader.input_for(name)``: stored records
    decoded by the field, or live values coerced by it; ``stoke.pipeline.inputs``).

    Example:
        >>> from stoke.format.fields import FloatField
        >>> from stoke.pipeline.inputs import LiveValues
        >>> stage = ValueStage("x", LiveValues(FloatField()), [])
        >>> stage.buffer_specs(), stage.output_names()
        ({'x': ((), dtype('float32'))}, ['x'])
    """

    def __init__(self, name: str, values: ValueInput, ops: Sequence[Op], timing: Timing | None = None) -> None:
        self.name = name
        self.values = values
        field = self.field = values.field
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
        # Its whole run is the field's time, which the Loader's worker loop adds to this slot.
        self.slot = (timing if timing is not None else Timing()).slot(f"{name}: decode", "value")

    def buffer_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """One row per sample for a fixed-size value, in the dtype the batch delivers; else nothing."""
        if self.kind != "fixed":
            return {}
        return {self.name: (self._shape, self._dtype)}  # type: ignore[dict-item]

    def output_names(self) -> list[str]:
        """The batch keys this stage fills."""
        if self.kind != "padded":
            return [self.name]
        return [self.name, f"{self.name}_lengths", *([f"{self.name}_mask"] if self.masked else [])]

    def list_names(self) -> list[str]:
        """Values kept per sample, to be padded or listed when the batch is collected."""
        return [] if self.kind == "fixed" else [self.name]

    def draw(self, seed: int, epoch: int, indices: np.ndarray) -> list[Any]:
        """Each text op's uniforms for these samples."""
        return [
            sample_uniforms(seed, epoch, stream, indices, op.draws) for op, stream in zip(self.text_ops, self.streams)
        ]

    def run(self, value: Any, params: list[Any], j: int, buffers: BufferSet) -> None:
        """Decode ``value``, run the text ops on it and put it in row ``j`` (or the row's list entry)."""
        decoded = self.values.decode(value)  # a stored array is a view of the shard: copied once, into the batch
        for op, uniforms in zip(self.text_ops, params):
            decoded = op.apply_text(decoded, uniforms[j])
        if self.kind == "fixed":
            buffers.arrays[self.name][j, ...] = decoded  # [j, ...] is a view even for 0-d values
        else:
            buffers.lists[self.name][j] = (
                np.frombuffer(decoded, np.uint8) if isinstance(self.field, BytesField) else decoded
            )

    def collect(self, buffers: BufferSet, count: int) -> dict[str, Any]:
        """The first ``count`` rows: one tensor, padded tensors with lengths (and a mask), or a list."""
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
