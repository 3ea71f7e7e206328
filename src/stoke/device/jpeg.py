"""JPEG images decoded on the GPU with nvJPEG, batched, with the CPU path's crops; CPU decoding otherwise.

``Loader(decode="device")`` (or ``"auto"``) builds a :class:`CompressedImageStage` for a JPEG-coded image
field instead of the CPU :class:`~stoke.pipeline.image.ImageStage`. The work splits in two:

* **per sample, on the worker threads**: read the 12-byte header, plan the sample's geometry with the
  field's sample ops from the *same* uniforms and streams the CPU path draws (so ``"device"`` and
  ``"cpu"`` crop the same boxes), and copy the stored JPEG bytes into the row's slot of a preallocated
  byte buffer. A slot holds the dataset's largest record (measured once from the shards' offset tables);
  a larger record fails with a :class:`~stoke.errors.SampleError`, never a truncated copy. A record that
  is not a plain JPEG (a PNG or CMYK JPEG kept by ``encoding="keep"``) is decoded on the CPU there, in
  full, and rides along with the batch.
* **per batch, as the field's first batch op** (:class:`DecodeOnDevice`): one batched
  ``torchvision.io.decode_jpeg(payloads, device=...)`` call, the EXIF orientation of each image (header
  byte 1, the meaning of ``image_codec.orient``), the images placed at the top-left of a zero-filled
  ``[B, C, Hmax, Wmax]`` canvas, and :func:`~stoke.ops.geometry_batch.render_batch` rendering every crop,
  resize and flip in a few tensor calls. The zeros around a smaller image are the zeros the CPU path pads
  with past an image's edge. The field's batchable pixel ops and batch ops (``Normalize``...) follow.

What differs from the CPU path: the decode is always full-size (the CPU path decodes at 1/2, 1/4 or 1/8
scale when a crop is at least twice the output), and nvJPEG's IDCT and chroma upsampling are not
libjpeg-turbo's. With a full-size CPU decoder in place of nvJPEG the batches match the CPU path's within
a grey level or two (``tests/device/test_device_jpeg.py``); the decoder is a constructor argument for
exactly that.

A JPEG that fails on the device is decoded again alone on the device and then on the CPU (libjpeg-turbo
accepts some files nvJPEG refuses); one that fails everywhere stops the epoch with a SampleError naming
its sample index, whatever ``on_error`` says: the batch is already assembled, so it can no longer be
skipped or replaced, and it is not counted against ``max_bad_fraction``. Pack-time validation decodes
every JPEG, and the Loader's checksum check (``verify``, in the workers, under the usual policy) catches
bytes damaged since, so in practice only ``verify="never"`` on damaged data reaches this.

Not for: PNG or raw-pixel fields (they decode on the CPU), per-image pixel ops with no batched form
(``Map``: the field decodes on the CPU), user datasets that are not packed, remote datasets (the largest
record is not known without fetching every shard), nor region decoding.

Example:
    >>> nvjpeg_unavailable("cpu")
    'the device cpu is not a CUDA device'
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError, FormatError, SampleError
from stoke.format.fields import ImageField
from stoke.format.fields import image_codec as codec
from stoke.format.fields.image import HEADER
from stoke.format.shard import DATA_START
from stoke.ops.base import BatchContext, BatchOp, Geometry, Op, PixelOp
from stoke.ops.batched import BatchablePixelOp
from stoke.ops.device import ToDevice
from stoke.ops.geometry_batch import render_batch
from stoke.pipeline.buffers import BufferSet
from stoke.pipeline.image import ImageStage
from stoke.pipeline.inputs import ImageInput, StoredImages
from stoke.pipeline.reader import SampleReader
from stoke.pipeline.timing import Timing
from stoke.rng import sample_uniforms

DECODE_MODES = ("cpu", "device", "auto")
# A decoder: CPU uint8 byte tensors, the field's mode ("RGB" or "L") and a device -> CHW uint8 images there.
Decoder = Callable[[list[torch.Tensor], str, torch.device], Sequence[torch.Tensor]]

logger = logging.getLogger("stoke")

_JPEG, _PIXELS = 0, 1  # how a row travels: stored JPEG bytes, or pixels the worker decoded on the CPU
_LENGTH, _KIND, _ORIENTATION, _HEIGHT, _WIDTH = range(5)  # the columns of the rows array


def check_decode(decode: Any) -> str:
    """``decode`` if it is one of ``"cpu"``, ``"device"``, ``"auto"``; else a ConfigError.

    >>> check_decode("auto")
    'auto'
    """
    if decode not in DECODE_MODES:
        raise ConfigError(f"decode must be 'cpu', 'device' or 'auto', got {decode!r}")
    return str(decode)


def nvjpeg_unavailable(device: str | torch.device | None) -> str | None:
    """None when ``torchvision.io.decode_jpeg`` can decode on ``device`` with nvJPEG, else one sentence why not.

    Never raises, whatever is (or is not) installed: the reasons are no device, a device that is not
    CUDA, CUDA unavailable to torch, torchvision not importable (with its error), a torchvision built
    without CUDA, or a one-pixel probe decode that failed on the device.

    >>> nvjpeg_unavailable(None)
    "no device is given (pass device='cuda' to the Loader)"
    """
    try:
        if device is None:
            return "no device is given (pass device='cuda' to the Loader)"
        device = torch.device(device)
        if device.type != "cuda":
            return f"the device {device} is not a CUDA device"
        if not torch.cuda.is_available():
            return "CUDA is not available to torch (a CPU build of torch, or no GPU visible)"
        return _probe(str(device))
    except Exception as error:  # an odd device string, a broken driver: a reason, never an exception
        return f"checking for nvJPEG failed ({type(error).__name__}: {error})"


@functools.lru_cache(maxsize=8)
def _probe(device: str) -> str | None:
    """Import torchvision and decode an 8x8 JPEG on ``device`` (once per device)."""
    try:
        import torchvision
        from torchvision.io import decode_jpeg  # noqa: F401 - the function the device path calls
    except Exception as error:  # torchvision raises RuntimeError, not ImportError, when it mismatches torch
        return f"torchvision cannot be imported ({type(error).__name__}: {error})"
    if getattr(getattr(torchvision, "version", None), "cuda", None) is None:
        return f"torchvision {getattr(torchvision, '__version__', '?')} is a build without CUDA, so without nvJPEG"
    try:
        probe = codec.encode_jpeg(np.zeros((8, 8, 3), np.uint8), quality=90)
        torchvision_decoder([torch.frombuffer(bytearray(probe), dtype=torch.uint8)], "RGB", torch.device(device))
    except Exception as error:
        return f"torchvision's nvJPEG decode fails on {device} ({type(error).__name__}: {error})"
    return None


def torchvision_decoder(payloads: list[torch.Tensor], mode: str, device: torch.device) -> Sequence[torch.Tensor]:
    """The default decoder: one batched ``torchvision.io.decode_jpeg`` call (nvJPEG on a CUDA device)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    read_mode = ImageReadMode.RGB if mode == "RGB" else ImageReadMode.GRAY
    decoded = decode_jpeg(payloads, mode=read_mode, device=device)
    return [decoded] if isinstance(decoded, torch.Tensor) else decoded


def orient_chw(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """An EXIF orientation (1-8) applied to a CHW tensor: ``image_codec.orient`` for torch (flips copy).

    >>> orient_chw(torch.arange(6).reshape(1, 2, 3), 6).tolist()
    [[[3, 0], [4, 1], [5, 2]]]
    """
    if orientation == 1:
        return image
    if orientation == 2:
        return image.flip(2)
    if orientation == 3:
        return image.flip(1, 2)
    if orientation == 4:
        return image.flip(1)
    if orientation == 5:
        return image.transpose(1, 2)
    if orientation == 6:
        return image.transpose(1, 2).flip(2)
    if orientation == 7:
        return image.flip(1, 2).transpose(1, 2)
    if orientation == 8:
        return image.transpose(1, 2).flip(1)
    raise FormatError(f"EXIF orientation {orientation} is not between 1 and 8: the image record is damaged")


def largest_record(dataset: Any, name: str) -> int | None:
    """Bytes of the largest stored record of field ``name``, from the shards' offset tables; None when
    that would mean fetching every shard (a remote dataset) or when ``dataset`` is not packed.

    Reads only the offset tables (eight bytes per sample and field), never the records. A damaged
    offset is clipped to its shard's data, so it cannot ask for a huge buffer.
    """
    from stoke.read import Dataset

    base = getattr(dataset, "base", dataset)
    if not isinstance(base, Dataset) or base.store.fetches:
        return None
    width = len(base.fields)
    position = base.field_positions([name])[0]
    largest = 0
    for shard in range(len(base.manifest.shards)):
        reader = base.shard_reader(shard)
        count = reader.num_samples
        if count == 0:
            continue
        starts = reader.offsets[position : count * width : width].astype(np.int64)
        stops = reader.offsets[position + 1 : count * width + 1 : width].astype(np.int64)
        sizes = np.clip(stops - starts, 0, reader.layout.offsets_start - DATA_START)
        largest = max(largest, int(sizes.max()))
    return largest


@dataclass
class CompressedBatch:
    """What :meth:`CompressedImageStage.collect` hands :class:`DecodeOnDevice`: views of the batch's buffers.

    ``payloads[r, :rows[r, 0]]`` holds row ``r``'s JPEG bytes; ``rows`` is (length, kind, orientation,
    displayed height, displayed width) per row; ``geometry`` (ay, by, ax, bx) the planned crop; ``pixels``
    the HWC images the workers decoded on the CPU (None for JPEG rows).
    """

    payloads: np.ndarray
    rows: np.ndarray
    geometry: np.ndarray
    pixels: list[np.ndarray | None]

    def __len__(self) -> int:
        return len(self.rows)


class DecodeOnDevice(BatchOp):
    """Decodes a :class:`CompressedBatch` on ``device`` and renders its crops: the field's first batch op.

    One batched ``decoder`` call for the JPEG rows, EXIF orientation per image, a zero canvas, then
    :func:`render_batch` (see the module docstring). Outputs uint8 ``[B, C, h, w]`` on ``device``.
    """

    def __init__(
        self,
        name: str,
        mode: str,
        size: tuple[int, int],
        device: torch.device,
        decoder: Decoder = torchvision_decoder,
        channels_last: bool = False,
        fast_decode: bool = True,
    ) -> None:
        self.name = name
        self.mode = mode
        self.size = size
        self.device = device
        self.decoder = decoder
        self.channels_last = channels_last
        self.fast_decode = fast_decode

    def apply(self, batch: CompressedBatch, context: BatchContext) -> torch.Tensor:  # type: ignore[override]
        count, channels = len(batch), codec.CHANNELS[self.mode]
        height, width = self.size
        if count == 0:
            return self._formatted(torch.empty((0, channels, height, width), dtype=torch.uint8, device=self.device))
        rows = batch.rows
        images = self._decode(batch, context)
        canvas = torch.zeros(
            (count, channels, int(rows[:, _HEIGHT].max()), int(rows[:, _WIDTH].max())),
            dtype=torch.uint8,
            device=self.device,
        )
        for row, image in enumerate(images):
            canvas[row, :, : image.shape[1], : image.shape[2]] = image
        geometries = [Geometry(height, width, *map(float, batch.geometry[row])) for row in range(count)]
        return self._formatted(render_batch(canvas, geometries))

    def _formatted(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def _decode(self, batch: CompressedBatch, context: BatchContext) -> list[torch.Tensor]:
        """Every row's displayed CHW image on the device."""
        rows = batch.rows
        jpeg_rows = [row for row in range(len(rows)) if rows[row, _KIND] == _JPEG]
        payloads = [torch.from_numpy(batch.payloads[row, : rows[row, _LENGTH]]) for row in jpeg_rows]
        try:
            decoded = list(self.decoder(payloads, self.mode, self.device)) if payloads else []
        except Exception:  # the batched call gives no partial results: find the row that failed
            decoded = [self._decode_alone(batch, row, context) for row in jpeg_rows]
        on_device = {row: self._displayed(image, rows[row], context, row) for row, image in zip(jpeg_rows, decoded)}
        return [
            on_device[row] if row in on_device else torch.from_numpy(batch.pixels[row]).permute(2, 0, 1).to(self.device)
            for row in range(len(rows))
        ]

    def _decode_alone(self, batch: CompressedBatch, row: int, context: BatchContext) -> torch.Tensor:
        """Row ``row`` decoded by itself on the device, else on the CPU, else a SampleError naming it."""
        payload = batch.payloads[row, : batch.rows[row, _LENGTH]]
        try:
            return self.decoder([torch.from_numpy(payload)], self.mode, self.device)[0]
        except Exception as device_error:
            stored = _stored_size(batch.rows[row])
            try:
                pixels = codec.decode_payload(
                    codec.CODEC_JPEG, memoryview(payload), self.mode, *stored, fast=self.fast_decode
                )
            except Exception as cpu_error:
                index = int(context.indices[row])
                failure = SampleError(
                    f"sample {index}: image {self.name!r} does not decode on {self.device} "
                    f"({type(device_error).__name__}: {device_error}) nor on the CPU ({cpu_error}); run stoke "
                    f"verify to list damaged samples, or load with decode='cpu' to skip them under on_error",
                    index=index,
                )
                raise failure from device_error
            return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).to(self.device)

    def _displayed(self, image: torch.Tensor, row: np.ndarray, context: BatchContext, position: int) -> torch.Tensor:
        stored = _stored_size(row)
        channels = codec.CHANNELS[self.mode]
        if image.ndim != 3 or tuple(image.shape) != (channels, *stored):
            index = int(context.indices[position])
            raise SampleError(
                f"sample {index}: image {self.name!r} decodes to {tuple(image.shape)} but its header says "
                f"{channels}x{stored[0]}x{stored[1]}; the record is damaged: run stoke verify",
                index=index,
            )
        return orient_chw(image, int(row[_ORIENTATION]))


def _stored_size(row: np.ndarray) -> tuple[int, int]:
    """(height, width) of the stored pixels, before the EXIF orientation is applied."""
    height, width = int(row[_HEIGHT]), int(row[_WIDTH])
    return (width, height) if codec.swaps_axes(int(row[_ORIENTATION])) else (height, width)


class CompressedImageStage:
    """Produces one JPEG image field as compressed bytes for :class:`DecodeOnDevice`; see the module docstring.

    A :class:`~stoke.pipeline.stage.FieldStage` over stored records only (``images``, from a packed
    dataset's reader), with ``capacity`` bytes per row (the Loader gives the dataset's largest record).

    Example:
        >>> import numpy as np, stoke
        >>> from stoke.pipeline.inputs import StoredImages
        >>> images = StoredImages(stoke.ImageField(encoding="jpeg"), None)
        >>> stage = CompressedImageStage("image", images, [stoke.ops.Resize((4, 4))],
        ...                              {"min_height": 8, "max_height": 8, "min_width": 8, "max_width": 8},
        ...                              device=torch.device("cpu"), capacity=1024)
        >>> sorted(stage.buffer_specs()), stage.output_names()
        (['image.jpeg_bytes', 'image.jpeg_geometry', 'image.jpeg_rows'], ['image'])
    """

    def __init__(
        self,
        name: str,
        images: StoredImages,
        ops: Sequence[Op],
        stats: dict[str, int] | None,
        device: torch.device,
        capacity: int,
        channels_last: bool = False,
        fast_decode: bool = True,
        decoder: Decoder = torchvision_decoder,
        timing: Timing | None = None,
    ) -> None:
        # The CPU stage checks the ops and fixes the output size exactly as the CPU path would.
        cpu = self._cpu = ImageStage(name, images, ops, stats, channels_last, fast_decode)
        unbatched = [op for op in cpu.pixel_ops if not isinstance(op, BatchablePixelOp)]
        if unbatched:
            raise ConfigError(
                f"transforms[{name!r}] holds {unbatched[0]!r}, which runs per image on the CPU; decode {name!r} "
                f"with decode='cpu'"
            )
        self.name = name
        self.images = images
        self.field: ImageField = images.field
        self.size = cpu.size
        self.channels_last = channels_last
        self.fast_decode = fast_decode
        self.capacity = max(1, int(capacity))
        # None per image: the batchable pixel ops run on the batch, on the streams they had per image.
        placement = cpu.placement.pixel_ops_to_batch(name)
        self.sample_ops, self.pixel_ops = placement.sample_ops, placement.pixel_ops
        self.streams = placement.streams(name)
        self.decode_op = DecodeOnDevice(name, self.field.mode, self.size, device, decoder, channels_last, fast_decode)
        self.batch_ops: list[BatchOp] = [self.decode_op, *placement.batch_ops]
        self._bytes, self._rows, self._geometry = f"{name}.jpeg_bytes", f"{name}.jpeg_rows", f"{name}.jpeg_geometry"
        self._pixels = f"{name}.cpu_pixels"
        self.timing = timing = timing if timing is not None else Timing()
        self._plan_slot = timing.slot(f"{name}: crop/resize/flip", "render")  # the plan (the device renders)
        # The whole run (the Loader's worker loop times it) without the plan: the copy of the bytes.
        self.slot = timing.slot(f"{name}: decode", "decode", contains=[self._plan_slot])

    def buffer_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Per row: a slot of ``capacity`` JPEG bytes, (length, kind, orientation, height, width), the crop."""
        return {
            self._bytes: ((self.capacity,), np.dtype(np.uint8)),
            self._rows: ((5,), np.dtype(np.int64)),
            self._geometry: ((4,), np.dtype(np.float64)),
        }

    def output_names(self) -> list[str]:
        """The batch keys this stage fills."""
        return [self.name]

    def list_names(self) -> list[str]:
        """The pixels of the rows decoded on the CPU (not plain JPEGs)."""
        return [self._pixels]

    def draw(self, seed: int, epoch: int, indices: np.ndarray) -> list[np.ndarray | None]:
        """The sample ops' uniforms: the CPU stage's first draws, from the same streams."""
        return [
            sample_uniforms(seed, epoch, stream, indices, op.draws) if op.draws else None
            for op, stream in zip(self.sample_ops, self.streams)
        ]

    def run(self, value: Any, params: list[np.ndarray | None], j: int, buffers: BufferSet) -> None:
        """Plan row ``j``'s crop from the record's header and copy its JPEG bytes into the row's slot (a
        record that is not a plain JPEG is decoded here, in full)."""
        timing = self.timing
        started = timing.start()
        height, width, header = self.images.open(value)
        geometry = self._cpu.plan(height, width, params, j)  # the sample ops' params come first
        timing.stop(self._plan_slot, started)
        row = buffers.arrays[self._rows][j]
        buffers.arrays[self._geometry][j] = (geometry.ay, geometry.by, geometry.ax, geometry.bx)
        if header.codec == codec.CODEC_JPEG:
            payload = value[HEADER.size :]
            if len(payload) > self.capacity:
                raise SampleError(
                    f"image {self.name!r} holds {len(payload):,} JPEG bytes, more than the {self.capacity:,} the "
                    f"device decoder's buffer was sized for (the largest record when the Loader started); the "
                    f"dataset changed under the Loader: create a new Loader, or run stoke verify"
                )
            buffers.arrays[self._bytes][j, : len(payload)] = np.frombuffer(payload, np.uint8)
            row[:] = (len(payload), _JPEG, header.orientation, header.height, header.width)
        else:  # a PNG, or a JPEG libjpeg-turbo does not decode itself: the CPU decodes it here, in full
            pixels = self.field.decode_pixels(value, header=header, fast=self.fast_decode)
            buffers.lists[self._pixels][j] = np.array(pixels, copy=True, order="C")
            row[:] = (0, _PIXELS, 1, header.height, header.width)

    def collect(self, buffers: BufferSet, count: int) -> dict[str, Any]:
        """The first ``count`` rows as one :class:`CompressedBatch`, for the field's first batch op."""
        compressed = CompressedBatch(
            buffers.arrays[self._bytes][:count],
            buffers.arrays[self._rows][:count],
            buffers.arrays[self._geometry][:count],
            buffers.lists[self._pixels][:count],
        )
        return {self.name: compressed}


def image_stage(
    decode: str,
    name: str,
    ops: Sequence[Op],
    reader: SampleReader,
    stats: dict[str, int] | None,
    device: torch.device | None,
    channels_last: bool,
    fast_decode: bool,
    decoder: Decoder | None = None,
    timing: Timing | None = None,
) -> ImageStage | CompressedImageStage:
    """The stage for image field ``name`` of ``reader`` under ``decode``: a :class:`CompressedImageStage`
    when the field can decode on the device, else the CPU :class:`ImageStage`.

    Under ``"device"`` a fallback is logged (logger ``stoke``): at INFO for a field that is not stored as
    JPEG, as one WARNING naming the reason otherwise. ``"auto"`` falls back silently. The device is the
    Loader's, else the first ``ToDevice`` in the field's ops; ``timing`` the Loader's timing hook.
    """
    check_decode(decode)
    images = reader.input_for(name)
    assert isinstance(images, ImageInput), f"field {name!r} is not an image field"
    field = images.field
    cpu_stage = functools.partial(ImageStage, name, images, ops, stats, channels_last, fast_decode, timing=timing)
    if decode == "cpu":
        return cpu_stage()
    if device is None:
        device = next((op.device for op in ops if isinstance(op, ToDevice)), None)
    capacity = None
    if not isinstance(images, StoredImages):
        reason = "the dataset is not packed (stoke.pack it to decode on the device)"
    elif field.encoding not in ("keep", "jpeg"):
        if decode == "device":
            logger.info("field %r is stored as %s, not JPEG: its images are decoded on the CPU", name, field.encoding)
        return cpu_stage()
    elif any(isinstance(op, PixelOp) and not isinstance(op, BatchablePixelOp) for op in ops):
        reason = "its transforms hold a per-image op with no batched form (such as Map)"
    else:
        capacity = largest_record(getattr(reader, "dataset", None), name)  # stored records: a PackedReader's
        reason = (
            "the largest record is not known without fetching every shard (a remote dataset)"
            if capacity is None
            else nvjpeg_unavailable(device)
        )
    if reason is not None:
        if decode == "device":
            logger.warning(
                "decode='device' cannot decode field %r on the device: %s; its images are decoded on the CPU",
                name,
                reason,
            )
        return cpu_stage()
    assert capacity is not None and device is not None and isinstance(images, StoredImages)
    return CompressedImageStage(
        name,
        images,
        ops,
        stats,
        torch.device(device),
        max(1, capacity - HEADER.size),
        channels_last,
        fast_decode,
        decoder or torchvision_decoder,
        timing,
    )
