"""Crops: ``RandomResizedCrop`` (the ImageNet training crop) and ``CenterCrop``.

Both follow torchvision's definitions, so results match what users know: RandomResizedCrop draws up to
ten (scale, log-aspect-ratio) attempts, keeps the first that fits, and falls back to a centre crop
clamped to the ratio range; CenterCrop pads with zeros when the crop is larger than the image.

Example:
    >>> import numpy as np
    >>> from stoke.ops.base import Geometry
    >>> CenterCrop(4).plan(Geometry.identity(10, 10), np.empty(0)).source_box()[:4]
    (3.0, 3.0, 7.0, 7.0)
"""

from __future__ import annotations

import math

import numpy as np

from stoke.errors import ConfigError
from stoke.ops.base import Geometry, SampleOp, pair

_ATTEMPTS = 10


class RandomResizedCrop(SampleOp):
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, then resize to ``size``."""

    draws = 4 * _ATTEMPTS

    def __init__(
        self,
        size: int | tuple[int, int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.size = pair(size, "RandomResizedCrop size")
        if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
            raise ConfigError(f"scale {scale} and ratio {ratio} must be increasing, positive ranges")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        return self.size

    def crop_box(self, height: int, width: int, uniforms: np.ndarray) -> tuple[int, int, int, int]:
        """(top, left, height, width) of the crop in a ``height`` x ``width`` image."""
        area = height * width
        log_low, log_high = math.log(self.ratio[0]), math.log(self.ratio[1])
        for attempt in range(_ATTEMPTS):
            u_scale, u_ratio, u_top, u_left = uniforms[4 * attempt : 4 * attempt + 4]
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u_scale)
            aspect = math.exp(log_low + (log_high - log_low) * u_ratio)
            crop_width = round(math.sqrt(target * aspect))
            crop_height = round(math.sqrt(target / aspect))
            if 0 < crop_width <= width and 0 < crop_height <= height:
                top = int(u_top * (height - crop_height + 1))
                left = int(u_left * (width - crop_width + 1))
                return top, left, crop_height, crop_width
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            crop_width, crop_height = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            crop_height, crop_width = height, round(height * self.ratio[1])
        else:
            crop_height, crop_width = height, width
        return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width

    def plan(self, geometry: Geometry, uniforms: np.ndarray) -> Geometry:
        top, left, height, width = self.crop_box(geometry.height, geometry.width, uniforms)
        return geometry.crop(top, left, height, width).resize(*self.size)


class CenterCrop(SampleOp):
    """Crop the centre ``size`` (an int for a square); pads with zeros where the image is smaller."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        self.size = pair(size, "CenterCrop size")

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        return self.size

    def plan(self, geometry: Geometry, uniforms: np.ndarray) -> Geometry:
        height, width = self.size
        return geometry.crop(_centre(geometry.height, height), _centre(geometry.width, width), height, width)


def _centre(extent: int, crop: int) -> int:
    if crop > extent:  # torchvision pads (crop - extent) // 2 before, the rest after
        return -((crop - extent) // 2)
    return round((extent - crop) / 2.0)
