"""The geometry every image path shares: one plan per sample, its integer source box, its decode scale.

The CPU image stage (``stoke.pipeline.image``) and the batched renderer (``stoke.ops.geometry_batch``)
turn a field's sample ops and one sample's uniforms into a :class:`~stoke.ops.base.Geometry` with
:func:`plan_geometry`, cut the same integer source box out of the image with :func:`crop_box`, and switch
from bilinear resampling to area averaging at the same shrink, :data:`AREA_SHRINK`. The stored-image
input (``stoke.pipeline.inputs``) picks the JPEG DCT scale with :func:`decode_factor`. So ``"cpu"``,
``"device"`` and a crop after ``ToDevice`` crop the same boxes from the same draws.

Not for: which ops run where (``stoke.ops.placement``), nor the pixels (the renderers do that).

Example:
    >>> import numpy as np
    >>> from stoke.ops.crop import CenterCrop
    >>> geometry = plan_geometry([CenterCrop(4)], 10, 10, [None], 0)
    >>> crop_box(geometry, 10, 10, (5, 5)), decode_factor(10, 10, geometry)
    ((2, 2, 4, 4), 1)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from stoke.ops.base import Geometry, SampleOp

# Area averaging from this shrink on, in both directions; bilinear below it. After the DCT scaling of
# ``decode_factor`` what is left to shrink is under 2x, where bilinear reads every source pixel.
AREA_SHRINK = 2.0

_NO_DRAWS = np.empty(0)


def plan_geometry(
    ops: Sequence[SampleOp], height: int, width: int, uniforms: Sequence[np.ndarray | None], row: int
) -> Geometry:
    """The geometry of a ``height`` x ``width`` image after ``ops``, with row ``row`` of ``uniforms[k]`` for
    op ``k`` (None for an op that draws nothing). Extra entries of ``uniforms`` (later ops') are ignored."""
    geometry = Geometry.identity(height, width)
    for op, draws in zip(ops, uniforms):
        geometry = op.plan(geometry, _NO_DRAWS if draws is None else draws[row])
    return geometry


def plan_geometries(
    ops: Sequence[SampleOp], height: int, width: int, uniforms: Sequence[np.ndarray | None], count: int
) -> list[Geometry]:
    """:func:`plan_geometry` for each of ``count`` images of one size (rows ``0..count-1``)."""
    return [plan_geometry(ops, height, width, uniforms, row) for row in range(count)]


def crop_box(
    geometry: Geometry, full_height: int, full_width: int, decoded: tuple[int, int]
) -> tuple[int, int, int, int]:
    """The pixels (top, left, bottom, right) of an image decoded at ``decoded`` size that ``geometry``
    resamples, out of a ``full_height`` x ``full_width`` image; may reach past the image's edges."""
    scale_y, scale_x = decoded[0] / full_height, decoded[1] / full_width
    top, left, bottom, right, _, _ = geometry.source_box()
    y0, x0 = _round(top * scale_y), _round(left * scale_x)
    return y0, x0, max(y0 + 1, _round(bottom * scale_y)), max(x0 + 1, _round(right * scale_x))


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


def _round(value: float) -> int:
    return math.floor(value + 0.5)
