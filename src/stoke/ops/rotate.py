"""``RandomRotation``: rotate each image about its centre by an angle drawn from ``[-degrees, degrees]``.

torchvision's semantics: a positive angle turns the picture counter-clockwise; the output keeps the
input's size (corners are cut off), the uncovered area takes ``fill`` (a grey level, or one per channel),
and pixels are resampled bilinearly, blending with ``fill`` along the border. The CPU path is one
``cv2.warpAffine`` (GIL released); the batched path one ``grid_sample`` for the whole batch. Both sample
at the same points; OpenCV quantises positions to 1/32 pixel, so they agree within a grey level or two
(more only right at sharp edges). Not a general affine op: no translation, scale or shear.

Example:
    >>> import numpy as np
    >>> op = RandomRotation(degrees=(90, 90))
    >>> image = np.arange(4, dtype=np.uint8).reshape(2, 2, 1)
    >>> op.apply_pixels(image, np.array([0.5]))[..., 0].tolist()  # a quarter turn counter-clockwise
    [[1, 3], [0, 2]]
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from stoke.errors import ConfigError
from stoke.ops.batched import (
    BatchablePixelOp,
    check_batch,
    fill_for,
    fill_values,
    from_float,
    to_float,
    uniforms_array,
)


class RandomRotation(BatchablePixelOp):
    """Rotate by an angle uniform in ``[-degrees, degrees]`` (or ``[lo, hi]``), filling with ``fill``."""

    draws = 1

    def __init__(self, degrees: float | Sequence[float], fill: int | Sequence[int] = 0) -> None:
        if isinstance(degrees, (int, float)):
            if degrees < 0:
                raise ConfigError(f"RandomRotation degrees must be non-negative, got {degrees}")
            low, high = -float(degrees), float(degrees)
        elif isinstance(degrees, Sequence) and len(degrees) == 2 and degrees[0] <= degrees[1]:
            low, high = float(degrees[0]), float(degrees[1])
        else:
            raise ConfigError(f"RandomRotation degrees must be a number or a (low, high) pair, got {degrees!r}")
        self.degrees = (low, high)
        self.fill = fill_values(fill, "RandomRotation fill")

    def angles(self, uniforms: np.ndarray) -> np.ndarray:
        """Each sample's angle in degrees (counter-clockwise) from its uniforms ``[B, 1]``."""
        low, high = self.degrees
        return low + (high - low) * uniforms[:, 0]

    def inverse_maps(self, uniforms: np.ndarray, height: int, width: int) -> np.ndarray:
        """``[B, 2, 3]`` affine maps from output pixel (x, y) to the source point it samples (pixel centres
        at integer coordinates, OpenCV's convention)."""
        radians = np.deg2rad(self.angles(uniforms))
        cos, sin = np.cos(radians), np.sin(radians)
        center_x, center_y = (width - 1) / 2.0, (height - 1) / 2.0
        maps = np.empty((len(radians), 2, 3))
        maps[:, 0, 0], maps[:, 0, 1] = cos, -sin
        maps[:, 1, 0], maps[:, 1, 1] = sin, cos
        maps[:, 0, 2] = center_x - cos * center_x + sin * center_y
        maps[:, 1, 2] = center_y - sin * center_x - cos * center_y
        return maps

    def apply_pixels(self, image: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        height, width, channels = image.shape
        inverse = self.inverse_maps(uniforms_array(uniforms, 1), height, width)[0]
        fill = fill_for(self.fill, channels, self)
        rotated = cv2.warpAffine(
            image,
            inverse,
            (width, height),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=tuple(float(v) for v in fill),
        )
        return rotated.reshape(image.shape)

    def apply_batch(self, batch: torch.Tensor, uniforms: np.ndarray | torch.Tensor) -> torch.Tensor:
        check_batch(batch, self)
        count, channels, height, width = batch.shape
        maps = torch.as_tensor(
            self.inverse_maps(uniforms_array(uniforms, 1, count), height, width), dtype=torch.float32
        ).to(batch.device)
        fill = torch.tensor(fill_for(self.fill, channels, self), dtype=torch.float32, device=batch.device)
        fill = fill.view(1, channels, 1, 1)
        ys = torch.arange(height, dtype=torch.float32, device=batch.device).view(1, height, 1)
        xs = torch.arange(width, dtype=torch.float32, device=batch.device).view(1, 1, width)
        a, b, c = (maps[:, 0, k].view(count, 1, 1) for k in range(3))
        d, e, f = (maps[:, 1, k].view(count, 1, 1) for k in range(3))
        source_x, source_y = a * xs + b * ys + c, d * xs + e * ys + f
        # grid_sample's coordinates (align_corners=False): -1 and 1 are the outer edges of the image.
        grid = torch.stack(((2 * source_x + 1) / width - 1, (2 * source_y + 1) / height - 1), dim=-1)
        # Sampling (image - fill) with zero padding, then adding fill back, blends with fill at the
        # border exactly as OpenCV's BORDER_CONSTANT does.
        shifted = to_float(batch).sub_(fill)
        rotated = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return from_float(rotated.add_(fill), batch)
