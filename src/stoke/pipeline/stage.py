"""The field stage: what the Loader asks of the part that produces one field of every batch.

A Loader holds one stage per loaded field and never asks which kind it has. At construction it sizes the
batch's buffers from every stage's ``buffer_specs`` (arrays) and ``list_names`` (per-sample lists); per
batch it asks each stage to ``draw`` its random numbers (a pure function of seed, epoch and dataset
indices, so any thread or process may draw them), calls ``run`` once per sample from the worker threads
or processes with that sample's value, and, once every sample is in, ``collect``\\s the tensors, which
then go through the stage's ``batch_ops``. The kinds:

* :class:`~stoke.pipeline.image.ImageStage`: an image field decoded, cropped, resized and flipped on the
  CPU, one pass per image into a uint8 row;
* :class:`~stoke.device.jpeg.CompressedImageStage`: a JPEG field's stored bytes per row, decoded and
  cropped on the device by its first batch op (``decode="device"``);
* :class:`~stoke.pipeline.values.ValueStage`: every other field (numbers, arrays, bytes, text, JSON).

:func:`stage_for` picks one. A stage takes its values through the input the reader gives it
(``stoke.pipeline.inputs``), so none has a code path per kind of reader. Stages do not import this module:
they implement the protocol by their shape, and this module imports them to choose. Not for: where the
samples come from (``stoke.pipeline.reader``), nor which op runs where (``stoke.ops.placement``).

Example:
    >>> import numpy as np
    >>> from stoke.pipeline.buffers import BufferPool
    >>> from stoke.pipeline.reader import reader_for
    >>> reader = reader_for({"x": np.arange(3.0), "y": np.arange(3)}, None, "never")
    >>> stages = [stage_for(name, [], reader) for name in reader.fields]
    >>> specs = {key: spec for stage in stages for key, spec in stage.buffer_specs().items()}
    >>> buffers = BufferPool(specs, batch_size=2, pin=False).acquire()
    >>> for j, position in enumerate([2, 0]):
    ...     for stage, value in zip(stages, reader.read(position)):
    ...         stage.run(value, stage.draw(0, 0, np.array([2, 0])), j, buffers)
    >>> {key: tensor.tolist() for stage in stages for key, tensor in stage.collect(buffers, 2).items()}
    {'x': [2.0, 0.0], 'y': [2, 0]}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from stoke.device.jpeg import CompressedImageStage, image_stage
from stoke.ops.base import BatchOp, Op
from stoke.pipeline.buffers import BufferSet
from stoke.pipeline.image import ImageStage
from stoke.pipeline.inputs import ImageInput
from stoke.pipeline.reader import SampleReader
from stoke.pipeline.timing import Timing
from stoke.pipeline.values import ValueStage

# Batch key -> (the shape of one row, its dtype): the arrays a stage writes rows of.
BufferSpecs = dict[str, tuple[tuple[int, ...], np.dtype]]


@runtime_checkable
class FieldStage(Protocol):
    """One field of every batch: buffers declared once, random numbers per batch, one ``run`` per sample.

    ``run`` is called from many threads at once (or from forked processes, on shared buffers), each for
    its own row ``j``: it writes only that row, and keeps per-thread scratch memory, never per-call state
    on the stage. ``params`` is what ``draw`` returned for the whole batch; ``run`` reads row ``j`` of it.

    Attributes:
        name: the field's name, and the batch key of its main output.
        batch_ops: what runs on the collected batch, in order (a device decode first, for
            ``CompressedImageStage``; then ``Normalize``, ``ToDevice``, ops moved onto the batch...).
        slot: the timing slot (``stoke.pipeline.timing``) of the stage's whole ``run``, which the worker
            loop (``stoke.pipeline.produce``) times while a profiler watches. A stage
            with pieces worth telling apart (an image's decode, each pixel op) registers them with the
            timing hook it is built with, brackets them in ``run``, and registers ``slot`` as containing
            them. One code path, watched or not.

    Example:
        >>> from stoke.format.fields import IntField
        >>> from stoke.pipeline.inputs import LiveValues
        >>> stage: FieldStage = ValueStage("label", LiveValues(IntField()), [])
        >>> stage.output_names(), stage.list_names(), stage.draw(0, 0, np.arange(4))
        (['label'], [], [])
    """

    name: str
    batch_ops: list[BatchOp]
    slot: int

    def buffer_specs(self) -> BufferSpecs:
        """The arrays this stage writes one row of per sample (the Loader allocates them once)."""
        ...

    def output_names(self) -> list[str]:
        """The batch keys ``collect`` returns."""
        ...

    def list_names(self) -> list[str]:
        """The per-sample lists this stage fills (values of varying size, kept until ``collect``)."""
        ...

    def draw(self, seed: int, epoch: int, indices: np.ndarray) -> list[Any]:
        """The random numbers of these samples (dataset ``indices``), one entry per random op."""
        ...

    def run(self, value: Any, params: list[Any], j: int, buffers: BufferSet) -> None:
        """Produce row ``j`` of ``buffers`` from one sample's ``value``, as the reader handed it out."""
        ...

    def collect(self, buffers: BufferSet, count: int) -> dict[str, Any]:
        """The first ``count`` rows as the batch's values (tensors, or lists of values that are not)."""
        ...


def stage_for(
    name: str,
    ops: Sequence[Op],
    reader: SampleReader,
    decode: str = "cpu",
    device: torch.device | None = None,
    channels_last: bool = False,
    fast_decode: bool = True,
    timing: Timing | None = None,
) -> FieldStage:
    """The stage of field ``name`` of ``reader`` with transforms ``ops``.

    An image field gets an :class:`ImageStage`, or under ``decode="device"`` or ``"auto"`` whatever
    :func:`~stoke.device.jpeg.image_stage` chooses; any other field a :class:`ValueStage`. ``device`` is
    the Loader's, ``channels_last`` and ``fast_decode`` its image options, ``timing`` its timing hook.
    Raises ConfigError for ops the field cannot take.
    """
    values = reader.input_for(name)
    if not isinstance(values, ImageInput):
        return ValueStage(name, values, ops, timing)
    stats = reader.field_stats(name)
    if decode != "cpu":
        return image_stage(decode, name, ops, reader, stats, device, channels_last, fast_decode, timing=timing)
    return ImageStage(name, values, ops, stats, channels_last, fast_decode, timing=timing)


def pipeline_facts(reader: SampleReader, stages: Sequence[FieldStage]) -> dict[str, Any]:
    """What a report needs to judge a pipeline: whether samples are stored records (``stored``), how they
    are checked (``verify``), and per image field its name, encoding (``"raw"`` for live images), largest
    stored side, delivered side and whether all its stored images have one size (``images``).

    >>> from PIL import Image
    >>> from stoke.ops import Resize
    >>> from stoke.pipeline.reader import reader_for
    >>> reader = reader_for([{"image": Image.new("RGB", (6, 8))}] * 2, None, "never")
    >>> facts = pipeline_facts(reader, [stage_for("image", [Resize((4, 4))], reader)])
    >>> facts["stored"], facts["verify"], facts["images"]
    (False, 'never', [{'name': 'image', 'encoding': 'raw', 'stored_side': 8, 'output_side': 4, 'one_size': True}])
    """
    facts = []
    for stage in stages:
        if not isinstance(stage, (ImageStage, CompressedImageStage)):
            continue
        stats = reader.field_stats(stage.name) or {}
        facts.append(
            {
                "name": stage.name,
                "encoding": stage.field.encoding if reader.packed else "raw",
                "stored_side": max(stats.get("max_height", 0), stats.get("max_width", 0)) or None,
                "output_side": max(stage.size),
                "one_size": bool(stats)
                and stats.get("min_height") == stats.get("max_height")
                and stats.get("min_width") == stats.get("max_width"),
            }
        )
    return {"stored": reader.packed, "verify": getattr(reader, "verify", "never"), "images": facts}
