"""The image stage: decode, crop, resize and flip each image in one pass into the batch buffer.

Per sample, one code path whatever the values came from: ask the field's input (``stoke.pipeline.inputs``)
for the displayed size (a stored record's 12-byte header, or a live image coerced once), run the sample
ops' plans on a :class:`Geometry` with this sample's random numbers (``stoke.ops.geometry``), then ask the
input for the pixels that geometry reads (a stored JPEG decodes at the smallest DCT scale that still
covers the crop at the output size, and only the region the crop needs), cut the crop out of them
(zero-padded where it extends past the image), resize it once (bilinear, or area averaging when shrinking
2x or more), mirror it if a flip was drawn, run the pixel ops (``stoke.ops.Map``) on it, and write it into
row ``j`` of the preallocated uint8 batch (NCHW, or NHWC for channels_last). The bilinear resize, the flip
and the CHW split are one pass of stoke's own kernel where the CPU has it (``stoke.pipeline.resample``),
else OpenCV's three. Which ops run here and which on the batch is ``stoke.ops.placement``'s decision.

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
import threading
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from stoke.errors import ConfigError, SampleError
from stoke.format.fields import ImageField
from stoke.ops.base import Geometry, Op, PixelOp, SampleOp
from stoke.ops.batched import BatchablePixelOp
from stoke.ops.geometry import AREA_SHRINK, crop_box, plan_geometry
from stoke.ops.placement import Placement, split_ops
from stoke.ops.resize import Resize
from stoke.pipeline import resample
from stoke.pipeline.buffers import BufferSet
from stoke.pipeline.inputs import ImageInput
from stoke.pipeline.timing import Timing, op_label
from stoke.rng import sample_uniforms

_NO_DRAWS = np.empty(0)


class ImageStage:
    """Produces one image field of every batch; see the module docstring. A
    :class:`~stoke.pipeline.stage.FieldStage`.

    ``images`` is how the reader hands out the field's values (``reader.input_for(name)``: stored records
    or live images, ``stoke.pipeline.inputs``); ``stats`` the field's size statistics, which fix the
    batch's image size when the ops do not.

    Example:
        >>> from stoke.format.fields import ImageField
        >>> from stoke.ops import RandomHorizontalFlip, Resize
        >>> from stoke.pipeline.inputs import LiveImages
        >>> stage = ImageStage("image", LiveImages(ImageField()), [Resize((4, 6)), RandomHorizontalFlip()], None, False)
        >>> stage.buffer_specs(), [draws.shape for draws in stage.draw(0, 0, np.arange(2))[1:]]
        ({'image': ((3, 4, 6), dtype('uint8'))}, [(2, 1)])
    """

    def __init__(
        self,
        name: str,
        images: ImageInput,
        ops: Sequence[Op],
        stats: dict[str, int] | None,
        channels_last: bool,
        fast_decode: bool = True,
        region_decode: bool = True,
        timing: Timing | None = None,
    ) -> None:
        self.name = name
        self.images = images
        self.field: ImageField = images.field
        self.channels_last = channels_last
        self.fast_decode = fast_decode
        self.region_decode = region_decode
        placement = self.placement = split_ops(name, ops)
        self.sample_ops, self.pixel_ops, self.batch_ops = placement
        size: tuple[int, int] | None = None
        if stats and stats["min_height"] == stats["max_height"] and stats["min_width"] == stats["max_width"]:
            size = (stats["min_height"], stats["min_width"])
        for op in self.sample_ops:
            size = op.output_size(size)
        if size is None:
            raise ConfigError(_no_size(name, stats, placement))
        self.size = size
        self._local = threading.local()
        self._per_sample: list[SampleOp | PixelOp] = [*self.sample_ops, *self.pixel_ops]
        self.streams = placement.streams(name)
        self.timing = timing = timing if timing is not None else Timing()
        self._decode_slot = timing.slot(f"{name}: decode", "decode")
        self._pixel_slots = [timing.slot(f"{name}: {op_label(op)}", _pixel_kind(op)) for op in self.pixel_ops]
        # The whole run, which the Loader's worker loop times, is reported without the decode and pixel ops.
        self.slot = timing.slot(f"{name}: crop/resize/flip", "render", contains=[self._decode_slot, *self._pixel_slots])

    def buffer_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """One uint8 row per sample: CHW, or HWC for channels_last."""
        height, width = self.size
        channels = self.field.channels
        shape = (height, width, channels) if self.channels_last else (channels, height, width)
        return {self.name: (shape, np.dtype(np.uint8))}

    def output_names(self) -> list[str]:
        """The batch keys this stage fills."""
        return [self.name]

    def list_names(self) -> list[str]:
        """No per-sample lists: every image goes into the batch array."""
        return []

    def draw(self, seed: int, epoch: int, indices: np.ndarray) -> list[np.ndarray | None]:
        """Each per-image op's uniforms for these samples (None for an op that draws nothing)."""
        return [
            sample_uniforms(seed, epoch, stream, indices, op.draws) if op.draws else None
            for op, stream in zip(self._per_sample, self.streams)
        ]

    def run(self, value: Any, params: list[np.ndarray | None], j: int, buffers: BufferSet) -> None:
        """Plan ``value``'s geometry from its size, get the pixels it needs and render them into row ``j``."""
        timing = self.timing
        started = timing.start()
        images = self.images
        height, width, handle = images.open(value)
        geometry = self.plan(height, width, params, j)
        pixels, origin, decoded = images.pixels(value, handle, geometry, self.fast_decode, self.region_decode)
        finish = None
        if self.pixel_ops:
            finish = functools.partial(self._apply_pixel_ops, params=params[len(self.sample_ops) :], j=j)
        out = buffers.arrays[self.name][j]
        timing.stop(self._decode_slot, started)
        render(pixels, height, width, geometry, out, self.channels_last, self._work(), finish, origin, decoded)

    def plan(self, height: int, width: int, params: list[np.ndarray | None], j: int) -> Geometry:
        """Row ``j``'s geometry through the sample ops, from a ``height`` x ``width`` image; a SampleError
        if it does not come out at the batch's size."""
        geometry = plan_geometry(self.sample_ops, height, width, params, j)
        if (geometry.height, geometry.width) != self.size:
            raise SampleError(
                f"image {self.name!r} comes out {geometry.height}x{geometry.width}, the batch holds "
                f"{self.size[0]}x{self.size[1]}; add a size-fixing op such as stoke.ops.Resize({self.size}) "
                f"to transforms[{self.name!r}]"
            )
        return geometry

    def _apply_pixel_ops(self, image: np.ndarray, params: list[np.ndarray | None], j: int) -> None:
        timing = self.timing
        for op, uniforms, slot in zip(self.pixel_ops, params, self._pixel_slots):
            started = timing.start()
            result = op.apply_pixels(image, _NO_DRAWS if uniforms is None else uniforms[j])
            timing.stop(slot, started)
            if result is None or result is image:
                continue
            if not isinstance(result, np.ndarray) or result.shape != image.shape or result.dtype != np.uint8:
                got = f"{result.dtype} {result.shape}" if isinstance(result, np.ndarray) else type(result).__name__
                raise SampleError(
                    f"{op!r} on image {self.name!r} returned {got}; it must return a uint8 array of shape "
                    f"{image.shape} or change the image in place and return None"
                )
            np.copyto(image, result)

    def _work(self) -> np.ndarray | None:
        if self.channels_last:
            return None
        work = getattr(self._local, "work", None)
        if work is None:
            work = self._local.work = np.empty((*self.size, self.field.channels), np.uint8)
        return work

    def collect(self, buffers: BufferSet, count: int) -> dict[str, Any]:
        """The first ``count`` rows as one uint8 tensor, NCHW (a permuted view of NHWC for channels_last)."""
        batch = torch.from_numpy(buffers.arrays[self.name][:count])
        return {self.name: batch.permute(0, 3, 1, 2) if self.channels_last else batch}


def _no_size(name: str, stats: dict[str, int] | None, placement: Placement) -> str:
    """Why field ``name``'s images have no one batch size, and the op that would give them one."""
    what = (
        f"holds images of different sizes ({stats['min_height']}x{stats['min_width']} to "
        f"{stats['max_height']}x{stats['max_width']})"
        if stats
        else "has no readable image among its first items to take the batch size from"
    )
    where = (
        f"before the batch ops in transforms[{name!r}] (a crop after ToDevice needs images of one size to batch)"
        if placement.crops_on_batch
        else f"to transforms[{name!r}]"
    )
    shorter = [op for op in placement.sample_ops if isinstance(op, Resize) and isinstance(op.size, int)]
    if shorter:  # the user did resize: say why that was not enough
        side = shorter[-1].size
        return (
            f"field {name!r} {what}, and Resize({side}) sets only the shorter side to {side} (the longer keeps "
            f"the aspect ratio), so the batch's images still differ in size; use "
            f"stoke.ops.Resize(({side}, {side})) for an exact size, or add stoke.ops.CenterCrop({side}) after "
            f"it, {where}"
        )
    return (
        f"field {name!r} {what}; add an op that fixes the size, such as "
        f"stoke.ops.RandomResizedCrop(224) or stoke.ops.Resize((224, 224)), {where}"
    )


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
    return cv2.INTER_AREA if min(shrink_y, shrink_x) >= AREA_SHRINK else cv2.INTER_LINEAR


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
        raise SampleError(
            f"the decoded window {pixels.shape[:2]} at {origin} misses part of the crop {inside}: the image's "
            f"header and pixels disagree; run stoke verify on the dataset"
        )
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


def _pixel_kind(op: PixelOp) -> str:
    """The timing kind of a per-image pixel op: whether moving it onto the batch is an option."""
    return "batchable_pixel_op" if isinstance(op, BatchablePixelOp) else "pixel_op"
