"""Crops, resizes and flips of a whole ``[B, C, H, W]`` tensor on its device, with the CPU path's semantics.

The sample ops (``RandomResizedCrop``, ``RandomHorizontalFlip``, ``Resize``, ``CenterCrop``) plan one
:class:`~stoke.ops.base.Geometry` per image; on the CPU the image stage renders it with OpenCV
(``stoke.pipeline.image.render``). Here the same plans (``stoke.ops.geometry.plan_geometry``), from the
same uniforms, are rendered for the whole batch at once where the batch lives:

* the integer source box of each sample is the CPU path's (``stoke.ops.geometry.crop_box``), zero-padded
  past the image;
* samples that shrink less than 2x in either direction are resampled bilinearly, OpenCV's way (half-pixel
  centres, edges clamped to the box), in **one** ``F.grid_sample`` call for all of them; a flip is a
  reversed coordinate, not a pass of its own;
* samples that shrink at least 2x in both directions (``AREA_SHRINK``), where the CPU path switches to
  area averaging, take exact box averages from running sums (``cumsum`` then two gathers per axis): the
  same weights as OpenCV's ``INTER_AREA``, no aliasing, still a fixed handful of tensor calls per batch.

Only the arithmetic differs from OpenCV (float weights here, 11-bit fixed point there): at most a grey
level or two on a few pixels (``tests/ops/test_device_crop.py``; docs/augmentation.md).

The Loader uses :class:`GeometryOnBatch` when sample ops follow a batch op (``ToDevice``) in a field's
transforms (``stoke.ops.placement``): it draws each op's uniforms from the random stream the op would
have had on the CPU. The batch must hold images of one size (fixed-size images, or a size-fixing op
before the batch op).
Not for per-image sizes that differ (use the CPU path), nor for rotation (``RandomRotation``).

Example:
    >>> import torch
    >>> from stoke.ops.base import Geometry
    >>> images = torch.arange(16, dtype=torch.uint8).reshape(1, 1, 4, 4)
    >>> crop = Geometry.identity(4, 4).crop(0, 0, 2, 2).flip_horizontal()
    >>> render_batch(images, [crop])[0, 0].tolist()
    [[1, 0], [5, 4]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from stoke.errors import ConfigError, SampleError
from stoke.ops.base import BatchContext, BatchOp, Geometry, SampleOp
from stoke.ops.batched import keep_format
from stoke.ops.geometry import AREA_SHRINK, crop_box, plan_geometries
from stoke.rng import sample_uniforms


def render_batch(images: torch.Tensor, geometries: Sequence[Geometry]) -> torch.Tensor:
    """Image ``i`` of ``images`` resampled through ``geometries[i]``, for the whole batch at once.

    ``images`` is ``[B, C, H, W]``, uint8 or floating point, on any device, in any memory format; each
    geometry starts from the full ``H`` x ``W`` image and all must have the same output size. Returns a
    new ``[B, C, h, w]`` tensor of the same dtype (uint8 rounded and clamped), device and memory format.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ConfigError(f"render_batch expects an image batch [B, C, H, W], got {got}")
    if images.dtype != torch.uint8 and not images.dtype.is_floating_point:
        raise ConfigError(f"render_batch takes uint8 or floating-point images, got {images.dtype}")
    count, channels, height, width = images.shape
    if len(geometries) != count:
        raise ConfigError(f"got {len(geometries)} geometries for a batch of {count} images; give one per image")
    if count == 0:
        raise ConfigError("render_batch got an empty batch; give it at least one image")
    sizes = {(g.height, g.width) for g in geometries}
    if len(sizes) != 1:
        raise SampleError(
            f"the geometries of one batch come out in {len(sizes)} sizes {sorted(sizes)}; a batch needs one "
            f"size, so end the ops with a fixed-size op such as stoke.ops.Resize((224, 224))"
        )
    (out_height, out_width) = sizes.pop()
    boxes = _boxes(geometries, height, width)
    work_dtype = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    work = images.to(work_dtype)
    area = (boxes[:, 2] / out_height >= AREA_SHRINK) & (boxes[:, 3] / out_width >= AREA_SHRINK)
    groups = [(rows, method) for rows, method in ((~area, _bilinear), (area, _area)) if rows.any()]
    if len(groups) == 1:
        out = groups[0][1](work, boxes, out_height, out_width)
    else:
        out = work.new_empty((count, channels, out_height, out_width))
        for rows, method in groups:
            picked = torch.as_tensor(np.flatnonzero(rows), device=images.device)
            out.index_copy_(0, picked, method(work.index_select(0, picked), boxes[rows], out_height, out_width))
    if images.dtype == torch.uint8:
        out = out.round_().clamp_(0, 255)
    return keep_format(out.to(images.dtype), images)


def _boxes(geometries: Sequence[Geometry], height: int, width: int) -> np.ndarray:
    """Per sample (top, left, rows, columns, flip_y, flip_x) of the integer source box the CPU renders."""
    boxes = np.empty((len(geometries), 6), np.int64)
    for row, geometry in enumerate(geometries):
        top, left, bottom, right = crop_box(geometry, height, width, (height, width))
        _, _, _, _, flip_y, flip_x = geometry.source_box()
        boxes[row] = top, left, bottom - top, right - left, flip_y, flip_x
    return boxes


def _positions(boxes: np.ndarray, size: int, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample and output pixel along ``axis`` (0 rows, 1 columns): its index counted from the side it
    is read from (reversed when flipped), and the box's start and length as float64 columns."""
    start, length, flip = boxes[:, axis, None], boxes[:, 2 + axis, None], boxes[:, 4 + axis, None].astype(bool)
    index = np.arange(size, dtype=np.float64)[None, :]
    return np.where(flip, size - 1 - index, index), np.concatenate([start, length], 1).astype(np.float64)


def _bilinear(images: torch.Tensor, boxes: np.ndarray, out_height: int, out_width: int) -> torch.Tensor:
    """OpenCV's INTER_LINEAR of each box, one ``grid_sample``: source = start + (i + 0.5) * length / size
    - 0.5, clamped into the box (OpenCV replicates the box's edge); outside the image reads zeros."""
    height, width = images.shape[2:]
    along = []
    for axis, (size, extent) in enumerate(((out_height, height), (out_width, width))):
        index, box = _positions(boxes, size, axis)
        start, length = box[:, :1], box[:, 1:]
        source = np.clip(start + (index + 0.5) * length / size - 0.5, start, start + length - 1)
        along.append((2 * source + 1) / extent - 1)  # grid_sample's [-1, 1] with align_corners=False
    # One small host-to-device copy; the [B, h, w, 2] grid is expanded on the device.
    packed = torch.as_tensor(np.concatenate(along, 1), dtype=images.dtype, device=images.device)
    ys, xs = packed[:, :out_height], packed[:, out_height:]
    count = len(boxes)
    grid = torch.stack(
        (xs[:, None, :].expand(count, out_height, out_width), ys[:, :, None].expand(count, out_height, out_width)), -1
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _area(images: torch.Tensor, boxes: np.ndarray, out_height: int, out_width: int) -> torch.Tensor:
    """OpenCV's INTER_AREA of each box: the mean of the source over each output pixel's footprint, from
    running sums along columns, then rows (separable, so exact); zeros past the image."""
    out = images
    for axis, size in ((3, out_width), (2, out_height)):
        out = _box_means(out, boxes, size, axis)
    return out


def _box_means(images: torch.Tensor, boxes: np.ndarray, size: int, dim: int) -> torch.Tensor:
    """Means of ``images`` along ``dim`` (2 rows, 3 columns) over each sample's ``size`` equal footprints."""
    extent = images.shape[dim]
    index, box = _positions(boxes, size, dim - 2)
    start, length = box[:, :1], box[:, 1:]
    step = length / size
    edges = np.clip(np.concatenate([start + index * step, start + (index + 1) * step], 1), 0, extent)
    whole = np.minimum(np.floor(edges), extent - 1)
    # Running sums with a leading zero: the integral up to a fractional position is a linear interpolation.
    sums = F.pad(images.cumsum(dim), (1, 0) if dim == 3 else (0, 0, 1, 0))
    lower = torch.as_tensor(whole, dtype=torch.int64, device=images.device)
    fraction = torch.as_tensor(edges - whole, dtype=images.dtype, device=images.device)
    shape = [len(boxes), 1, 1, 1]
    shape[dim] = 2 * size
    lower, fraction = lower.view(shape), fraction.view(shape)
    full = list(images.shape)
    full[dim] = 2 * size
    below = sums.gather(dim, lower.expand(full))
    above = sums.gather(dim, (lower + 1).expand(full))
    integral = below + fraction * (above - below)
    first, second = integral.split(size, dim)
    return (second - first) / torch.as_tensor(step, dtype=images.dtype, device=images.device).view(len(boxes), 1, 1, 1)


class GeometryOnBatch(BatchOp):
    """Runs sample ops on a whole batch where it lives: op ``k`` draws from random stream ``streams[k]``.

    The Loader makes one when sample ops follow a batch op in a field's transforms, with the streams the
    ops would have had on the CPU, so a crop moved after ``ToDevice`` draws the same boxes.
    """

    def __init__(self, ops: Sequence[SampleOp], streams: Sequence[int]) -> None:
        if len(ops) != len(streams) or not ops:
            raise ConfigError(f"give one random stream per sample op, got {len(ops)} ops and {len(streams)} streams")
        self.ops = list(ops)
        self.streams = list(streams)

    def apply(self, batch: torch.Tensor, context: BatchContext) -> torch.Tensor:
        count = len(context.indices)
        uniforms = [
            sample_uniforms(context.seed, context.epoch, stream, context.indices, op.draws) if op.draws else None
            for op, stream in zip(self.ops, self.streams)
        ]
        height, width = batch.shape[-2:]
        return render_batch(batch, plan_geometries(self.ops, height, width, uniforms, count))
