"""The image stage: decode, crop, resize and flip each image in one pass into the batch buffer.

Per sample: read the 12-byte header (displayed size), run the sample ops' plans on a :class:`Geometry`
with this sample's random numbers, then decode at the smallest JPEG DCT scale that still covers the crop
at the output size, cut the crop out of the decoded pixels (zero-padded where it extends past the image),
resize it once (bilinear, or area averaging when shrinking 2x or more), mirror it if a flip was drawn,
run the pixel ops (``stoke.ops.Map``) on it, and write it into row ``j`` of the preallocated uint8 batch
(NCHW, or NHWC for channels_last). The bilinear resize, the flip and the CHW split are one pass of
stoke's own kernel where the CPU has it (``stoke.pipeline.resample``), else OpenCV's three.

Example:
    >>> import numpy as np
    >>> from stoke.ops.base import Geometry
    >>> out = np.empty((1, 2, 2), np.uint8)
    >>> pixels = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    >>> render(pixels, 4, 4, Geometry.identity(4, 4).crop(0, 0, 2, 2), out, channels_last=False)
    >>> out[0].tolist()
    [[0, 1], [4, 5]]
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from stoke.errors import ConfigError, SampleError
from stoke.format.fields import ImageField
from stoke.ops.base import BatchOp, Geometry, Op, PixelOp, SampleOp
from stoke.ops.resize import Resize
from stoke.pipeline import resample
from stoke.pipeline.buffers import BufferSet
from stoke.rng import sample_uniforms, stream_id

_NO_DRAWS = np.empty(0)


class ImageStage:
    """Produces one image field of every batch; see the module docstring."""

    def __init__(
        self,
        name: str,
        field: ImageField,
        ops: Sequence[Op],
        packed: bool,
        stats: dict[str, int] | None,
        channels_last: bool,
        fast_decode: bool = True,
        region_decode: bool = True,
    ) -> None:
        self.name = name
        self.field = field
        self.packed = packed
        self.channels_last = channels_last
        self.fast_decode = fast_decode
        self.region_decode = region_decode
        self.sample_ops, self.pixel_ops, self.batch_ops = split_ops(name, ops)
        size: tuple[int, int] | None = None
        if stats and stats["min_height"] == stats["max_height"] and stats["min_width"] == stats["max_width"]:
            size = (stats["min_height"], stats["min_width"])
        for op in self.sample_ops:
            size = op.output_size(size)
        if size is None:
            what = (
                f"holds images of different sizes ({stats['min_height']}x{stats['min_width']} to "
                f"{stats['max_height']}x{stats['max_width']})"
                if stats
                else "has no readable image among its first items to take the batch size from"
            )
            on_device = any(type(op).__name__ == "GeometryOnBatch" for op in self.batch_ops)
            where = (
                f"before the batch ops in transforms[{name!r}] (a crop after ToDevice needs images of one size "
                f"to batch)"
                if on_device
                else f"to transforms[{name!r}]"
            )
            shorter = [op for op in self.sample_ops if isinstance(op, Resize) and isinstance(op.size, int)]
            if shorter:  # the user did resize: say why that was not enough
                side = shorter[-1].size
                raise ConfigError(
                    f"field {name!r} {what}, and Resize({side}) sets only the shorter side to {side} (the longer keeps "
                    f"the aspect ratio), so the batch's images still differ in size; use "
                    f"stoke.ops.Resize(({side}, {side})) for an exact size, or add stoke.ops.CenterCrop({side}) after "
                    f"it, {where}"
                )
            raise ConfigError(
                f"field {name!r} {what}; add an op that fixes the size, such as "
                f"stoke.ops.RandomResizedCrop(224) or stoke.ops.Resize((224, 224)), {where}"
            )
        self.size = size
        # One decode buffer per worker thread, as large as the largest stored image (never above the pixel limit).
        largest = min(stats["max_height"] * stats["max_width"], field.max_pixels) if packed and stats else 0
        self._scratch_bytes = largest * field.channels
        self._local = threading.local()
        self._per_sample: list[SampleOp | PixelOp] = [*self.sample_ops, *self.pixel_ops]
        self.streams = [stream_id(name, position) for position in range(len(self._per_sample))]
        self.clock: Any = None  # a stoke.profile StageClock while profiled, adding to ``slots``
        self.slots: dict[str, Any] = {}

    def buffer_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        height, width = self.size
        channels = self.field.channels
        shape = (height, width, channels) if self.channels_last else (channels, height, width)
        return {self.name: (shape, np.dtype(np.uint8))}

    def output_names(self) -> list[str]:
        """The batch keys this stage fills."""
        return [self.name]

    def list_names(self) -> list[str]:
        return []

    def draw(self, seed: int, epoch: int, indices: np.ndarray) -> list[np.ndarray | None]:
        return [
            sample_uniforms(seed, epoch, stream, indices, op.draws) if op.draws else None
            for op, stream in zip(self._per_sample, self.streams)
        ]

    def run(self, value: Any, params: list[np.ndarray | None], j: int, buffers: BufferSet) -> None:
        clock = self.clock
        started = time.perf_counter_ns() if clock is not None else 0
        if self.packed:
            header = self.field.header(value)
            height, width = header.height, header.width
        else:
            pixels = self.field.coerce(value)
            height, width = pixels.shape[:2]
        geometry = self.plan(height, width, params, j)
        origin, decoded = (0, 0), None
        if self.packed:
            factor = decode_factor(height, width, geometry)
            window = None
            if self.region_decode:
                scaled = (-(-height // factor), -(-width // factor))
                box = crop_box(geometry, height, width, scaled)
                window = self.field.decode_window(value, header, factor, box, self._scratch(), self.fast_decode)
            if window is not None:
                pixels, origin, decoded = window.pixels, window.origin, window.scaled
            else:
                min_height, min_width = (0, 0) if factor == 1 else (-(-height // factor), -(-width // factor))
                pixels = self.field.decode_pixels(
                    value, min_height, min_width, self._scratch(), self.fast_decode, header=header
                )
        finish = None
        if self.pixel_ops:
            finish = functools.partial(self._apply_pixel_ops, params=params[len(self.sample_ops) :], j=j)
        out = buffers.arrays[self.name][j]
        if clock is not None:
            decoded_at = time.perf_counter_ns()
            clock.add(self.slots["decode"], decoded_at - started)
        render(pixels, height, width, geometry, out, self.channels_last, self._work(), finish, origin, decoded)
        if clock is not None:  # includes the pixel ops; the clock reports it without them
            clock.add(self.slots["render"], time.perf_counter_ns() - decoded_at)

    def plan(self, height: int, width: int, params: list[np.ndarray | None], j: int) -> Geometry:
        """Row ``j``'s geometry through the sample ops, from a ``height`` x ``width`` image; a SampleError
        if it does not come out at the batch's size."""
        geometry = Geometry.identity(height, width)
        for op, uniforms in zip(self.sample_ops, params):
            geometry = op.plan(geometry, _NO_DRAWS if uniforms is None else uniforms[j])
        if (geometry.height, geometry.width) != self.size:
            raise SampleError(
                f"image {self.name!r} comes out {geometry.height}x{geometry.width}, the batch holds "
                f"{self.size[0]}x{self.size[1]}; add a size-fixing op such as stoke.ops.Resize({self.size}) "
                f"to transforms[{self.name!r}]"
            )
        return geometry

    def _apply_pixel_ops(self, image: np.ndarray, params: list[np.ndarray | None], j: int) -> None:
        clock = self.clock
        for position, (op, uniforms) in enumerate(zip(self.pixel_ops, params)):
            started = time.perf_counter_ns() if clock is not None else 0
            result = op.apply_pixels(image, _NO_DRAWS if uniforms is None else uniforms[j])
            if clock is not None:
                clock.add(self.slots["pixel_ops"][position], time.perf_counter_ns() - started)
            if result is None or result is image:
                continue
            if not isinstance(result, np.ndarray) or result.shape != image.shape or result.dtype != np.uint8:
                got = f"{result.dtype} {result.shape}" if isinstance(result, np.ndarray) else type(result).__name__
                raise SampleError(
                    f"{op!r} on image {self.name!r} returned {got}; it must return a uint8 array of shape "
                    f"{image.shape} or change the image in place and return None"
                )
            np.copyto(image, result)

    def _scratch(self) -> np.ndarray | None:
        if not self._scratch_bytes:
            return None
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = np.empty(self._scratch_bytes, np.uint8)
        return scratch

    def _work(self) -> np.ndarray | None:
        if self.channels_last:
            return None
        work = getattr(self._local, "work", None)
        if work is None:
            work = self._local.work = np.empty((*self.size, self.field.channels), np.uint8)
        return work

    def collect(self, buffers: BufferSet, count: int) -> dict[str, Any]:
        batch = torch.from_numpy(buffers.arrays[self.name][:count])
        return {self.name: batch.permute(0, 3, 1, 2) if self.channels_last else batch}


def split_ops(name: str, ops: Sequence[Op]) -> tuple[list[SampleOp], list[PixelOp], list[BatchOp]]:
    """Sample ops, then pixel ops, then batch ops of a field's transform list, in that order.

    A pixel op with a batched form (``stoke.ops.batched``) placed after a batch op (``ToDevice``, say)
    becomes a batch op that runs it on the whole batch where the batch is, drawing the uniforms of the
    random stream it would have had as the next per-image op: moving it after ``ToDevice`` changes where
    it runs, not what it draws. Sample ops placed after a batch op likewise become one
    ``GeometryOnBatch`` (``stoke.ops.geometry_batch``) that crops, resizes and flips the whole batch.
    """
    from stoke.ops.batched import BatchablePixelOp, OnBatch
    from stoke.ops.geometry_batch import GeometryOnBatch
    from stoke.ops.normalize import Normalize

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
    return sample_ops, pixel_ops, batch_ops


def decode_factor(height: int, width: int, geometry: Geometry) -> int:
    """The JPEG DCT scale to decode at, as a divisor: 8, 4, 2 or 1 (full size).

    The largest power-of-two reduction whose crop still has at least the output's pixels. Only those
    scales: libjpeg-turbo's SIMD inverse DCTs cover 1/1, 1/2, 1/4 and 1/8, and the scales between (5/8,
    3/4, 7/8) run scalar code that is slower than a full-size decode.
    """
    top, left, bottom, right, _, _ = geometry.source_box()
    room = min((bottom - top) / geometry.height, (right - left) / geometry.width)
    for factor in (8, 4, 2):
        if room >= factor:
            return factor
    return 1


def crop_box(
    geometry: Geometry, full_height: int, full_width: int, decoded: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The pixels (top, left, bottom, right) of an image decoded at ``decoded`` size that ``geometry``
    resamples, out of a ``full_height`` x ``full_width`` image; may reach past the image's edges."""
    scale_y, scale_x = decoded[0] / full_height, decoded[1] / full_width
    top, left, bottom, right, _, _ = geometry.source_box()
    y0, x0 = _round(top * scale_y), _round(left * scale_x)
    return y0, x0, max(y0 + 1, _round(bottom * scale_y)), max(x0 + 1, _round(right * scale_x))


def render(
    pixels: np.ndarray,
    full_height: int,
    full_width: int,
    geometry: Geometry,
    out: np.ndarray,
    channels_last: bool,
    work: np.ndarray | None = None,
    finish: Callable[[np.ndarray], None] | None = None,
    origin: tuple[int, int] = (0, 0),
    decoded: tuple[int, int] | None = None,
) -> None:
    """Resample ``pixels`` (decoded from a ``full_height`` x ``full_width`` image) through ``geometry`` into ``out``.

    ``out`` is one batch row: HWC when ``channels_last``, else CHW. ``work`` is an HWC buffer of the output
    size that a thread reuses for the CHW case. A bilinear resize with stoke's kernel writes the flipped
    CHW planes (or HWC row) directly; otherwise OpenCV resizes straight into the row (or ``work``), flips
    in place and splits channels into the CHW planes: no temporary image per sample either way. ``finish``
    (the pixel ops) gets the HWC image just before the split. When ``pixels`` is only a window of the decoded image,
    ``origin`` is its top-left corner in that image and ``decoded`` the image's whole (height, width).
    """
    decoded = decoded or pixels.shape[:2]
    y0, x0, y1, x1 = crop_box(geometry, full_height, full_width, decoded)
    _, _, _, _, flip_y, flip_x = geometry.source_box()
    region = _crop_padded(pixels, y0 - origin[0], x0 - origin[1], y1 - origin[0], x1 - origin[1], decoded, origin)
    height, width, channels = geometry.height, geometry.width, pixels.shape[2]
    target = out if channels_last else work
    if target is None:
        target = np.empty((height, width, channels), np.uint8)
    flat = target if channels > 1 else target.reshape(height, width)  # OpenCV's one-channel images are 2-D
    flipped = False
    if region.shape[:2] != (height, width):
        interpolation = _interpolation(region.shape[0] / height, region.shape[1] / width)
        if interpolation == cv2.INTER_LINEAR and resample.available():
            # stoke's kernel: resize, flip and (when nothing runs on the HWC image) CHW split in one pass
            planar = not channels_last and finish is None
            resample.resize(_packed(region), out if planar else target, planar=planar, flip_x=flip_x, flip_y=flip_y)
            if planar:
                return
            flipped = True
        else:
            resized = cv2.resize(_opencv_ready(region), (width, height), dst=flat, interpolation=interpolation)
            if resized.ctypes.data != flat.ctypes.data:  # OpenCV allocated after all: copy into place
                np.copyto(flat, resized)
    else:
        np.copyto(target, region)
    if (flip_x or flip_y) and not flipped:
        cv2.flip(flat, -1 if flip_x and flip_y else 1 if flip_x else 0, dst=flat)
    if finish is not None:
        finish(target)
    if not channels_last:
        if channels == 3:
            planes = cv2.split(target, [out[0], out[1], out[2]])
            if planes[0].ctypes.data != out[0].ctypes.data:
                np.copyto(out, target.transpose(2, 0, 1))
        else:
            np.copyto(out[0], flat)


def _interpolation(shrink_y: float, shrink_x: float) -> int:
    """Bilinear up to a 2x shrink (what is left after DCT scaling); area averaging beyond, where bilinear
    would skip source pixels and alias. Area costs about five times as much as bilinear."""
    return cv2.INTER_AREA if min(shrink_y, shrink_x) >= 2.0 else cv2.INTER_LINEAR


def _round(value: float) -> int:
    return math.floor(value + 0.5)


def _crop_padded(
    pixels: np.ndarray,
    y0: int,
    x0: int,
    y1: int,
    x1: int,
    decoded: tuple[int, int] | None = None,
    origin: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Rows ``y0:y1`` and columns ``x0:x1`` of ``pixels``, zeros where they reach past the image.

    ``pixels`` is the window at ``origin`` of an image of size ``decoded``; the window must hold every
    pixel of the box that lies inside the image.
    """
    height, width = pixels.shape[:2]
    if y0 >= 0 and x0 >= 0 and y1 <= height and x1 <= width:
        return pixels[y0:y1, x0:x1]
    full_height, full_width = decoded or (height, width)
    inside = (
        max(y0, -origin[0]),
        max(x0, -origin[1]),
        min(y1, full_height - origin[0]),
        min(x1, full_width - origin[1]),
    )
    top, left, bottom, right = inside
    if top < bottom and left < right and (top < 0 or left < 0 or bottom > height or right > width):
        raise ValueError(f"the decoded window {pixels.shape[:2]} at {origin} misses part of the crop {inside}")
    region = np.zeros((y1 - y0, x1 - x0, pixels.shape[2]), np.uint8)
    if top < bottom and left < right:
        region[top - y0 : bottom - y0, left - x0 : right - x0] = pixels[top:bottom, left:right]
    return region


def _packed(region: np.ndarray) -> np.ndarray:
    """``region`` if its pixels are packed in rows with a positive stride (a crop of a decoded image or a
    mapped record), else a contiguous copy (a rotated view): what OpenCV and stoke's kernel read."""
    channels = region.shape[2]
    if region.strides[2] == 1 and region.strides[1] == channels and region.strides[0] > 0:
        return region
    return np.ascontiguousarray(region)


def _opencv_ready(region: np.ndarray) -> np.ndarray:
    """:func:`_packed`, two-dimensional for one channel as OpenCV wants it."""
    packed = _packed(region)
    return packed if packed.shape[2] > 1 else packed[:, :, 0]
