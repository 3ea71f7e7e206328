"""Where each op of a field's transform list runs: per sample, per image's pixels, or on the whole batch.

:func:`split_ops` reads a field's transforms in order and gives a :class:`Placement`:

* **sample ops** (crop, resize, flip) first: planned per image on a Geometry and rendered in one pass;
* **pixel ops** next, per image on the CPU worker, after the geometry is rendered;
* **batch ops** last, on the batch tensor wherever it is. An op placed after a batch op (``ToDevice``,
  say) runs there too: a pixel op with a batched form becomes an :class:`~stoke.ops.batched.OnBatch`,
  and consecutive sample ops one :class:`~stoke.ops.geometry_batch.GeometryOnBatch`. Each draws the
  uniforms of the random stream it would have had as the next per-image op, so moving an op after
  ``ToDevice`` changes where it runs, not what it draws.

An order that cannot run (a crop after a pixel op, a per-image op after a batch op with no batched form,
anything geometric or per pixel after ``Normalize``) is a ConfigError naming the two ops. Not for: the
geometry the renderers share (``stoke.ops.geometry``), nor running the ops (the stages, the Loader).

Example:
    >>> from stoke.ops import RandomHorizontalFlip, Resize, ToDevice
    >>> placement = split_ops("image", [Resize((8, 8)), ToDevice("cpu"), RandomHorizontalFlip()])
    >>> placement.sample_ops, [type(op).__name__ for op in placement.batch_ops], placement.crops_on_batch
    ([Resize(size=(8, 8))], ['ToDevice', 'GeometryOnBatch'], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from stoke.errors import ConfigError
from stoke.ops.base import BatchOp, Op, PixelOp, SampleOp
from stoke.ops.batched import BatchablePixelOp, OnBatch
from stoke.ops.geometry_batch import GeometryOnBatch
from stoke.ops.normalize import Normalize
from stoke.rng import stream_id


class Placement(NamedTuple):
    """A field's ops by where they run, each list in the transforms' order (a tuple: unpacks as three)."""

    sample_ops: list[SampleOp]
    pixel_ops: list[PixelOp]
    batch_ops: list[BatchOp]

    @property
    def crops_on_batch(self) -> bool:
        """Whether some sample ops run on the batch (after a batch op), which needs images of one size."""
        return any(isinstance(op, GeometryOnBatch) for op in self.batch_ops)

    def streams(self, name: str) -> list[int]:
        """The random streams of the per-image ops (sample ops, then pixel ops) of field ``name``."""
        return [stream_id(name, position) for position in range(len(self.sample_ops) + len(self.pixel_ops))]

    def pixel_ops_to_batch(self, name: str) -> Placement:
        """This placement with every pixel op run batched, first among the batch ops, on the stream it had
        per image (for a decoder that renders images only on the batch). Each must be batchable."""
        moved = [
            OnBatch(op, stream_id(name, len(self.sample_ops) + position))  # type: ignore[arg-type]
            for position, op in enumerate(self.pixel_ops)
        ]
        return Placement(self.sample_ops, [], [*moved, *self.batch_ops])


def split_ops(name: str, ops: Sequence[Op]) -> Placement:
    """The :class:`Placement` of field ``name``'s transforms ``ops``; see the module docstring."""
    sample_ops: list[SampleOp] = []
    pixel_ops: list[PixelOp] = []
    batch_ops: list[BatchOp] = []

    def next_position() -> int:  # the op's place among the per-image ops on the CPU path
        moved = sum(len(b.ops) if isinstance(b, GeometryOnBatch) else isinstance(b, OnBatch) for b in batch_ops)
        return len(sample_ops) + len(pixel_ops) + moved

    for op in ops:
        if isinstance(op, SampleOp) and batch_ops:
            normalized = [earlier for earlier in batch_ops if isinstance(earlier, Normalize)]
            if normalized:  # its output is on neither pixel scale, so the zero padding would not be black
                raise ConfigError(
                    f"transforms[{name!r}] puts {op!r} after {normalized[0]!r}; per-image ops come first, and "
                    f"crops on the batch take images on the 0-255 (uint8) or 0-1 (float) scale"
                )
            pixel = pixel_ops[-1:] + [b.op for b in batch_ops if isinstance(b, OnBatch)][-1:]
            if pixel:
                raise ConfigError(
                    f"transforms[{name!r}] puts the geometric op {op!r} after {pixel[-1]!r}; "
                    f"crops, resizes and flips come first"
                )
            stream = stream_id(name, next_position())
            last = batch_ops[-1]
            if isinstance(last, GeometryOnBatch):  # consecutive sample ops render in one pass
                batch_ops[-1] = GeometryOnBatch([*last.ops, op], [*last.streams, stream])
            else:
                batch_ops.append(GeometryOnBatch([op], [stream]))
            continue
        if isinstance(op, BatchablePixelOp) and batch_ops:
            normalized = [earlier for earlier in batch_ops if isinstance(earlier, Normalize)]
            if normalized:
                raise ConfigError(
                    f"transforms[{name!r}] puts {op!r} after {normalized[0]!r}; pixel ops take images on the "
                    f"0-255 (uint8) or 0-1 (float) scale, so put it before Normalize"
                )
            batch_ops.append(OnBatch(op, stream_id(name, next_position())))
            continue
        if isinstance(op, (SampleOp, PixelOp)) and batch_ops:
            raise ConfigError(
                f"transforms[{name!r}] puts {op!r} after the batch op {batch_ops[-1]!r}; per-image ops come first"
            )
        if isinstance(op, SampleOp):
            if pixel_ops:
                raise ConfigError(
                    f"transforms[{name!r}] puts the geometric op {op!r} after {pixel_ops[-1]!r}; "
                    f"crops, resizes and flips come first"
                )
            sample_ops.append(op)
        elif isinstance(op, PixelOp):
            pixel_ops.append(op)
        elif isinstance(op, BatchOp):
            batch_ops.append(op)
        else:
            raise ConfigError(f"transforms[{name!r}] holds {op!r}, which is not a stoke op")
    return Placement(sample_ops, pixel_ops, batch_ops)
