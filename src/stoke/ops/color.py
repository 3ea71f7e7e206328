"""``ColorJitter``: random brightness, contrast, saturation and hue, with torchvision's definitions.

Each sample draws four factors: brightness ``b``, contrast ``c`` and saturation ``s`` uniform in
``[max(0, 1 - v), 1 + v]`` for a setting ``v`` (or in a given ``(low, high)``), and a hue shift ``h``
uniform in ``[-v, v]`` (``v <= 0.5``, in turns of the colour wheel). They are applied in this fixed order
(torchvision shuffles the order per sample; a fixed order keeps the op one cheap pass):

1. brightness: ``x * b``
2. contrast: ``c * x + (1 - c) * mean``, the mean of the image's grey levels
3. saturation: ``s * x + (1 - s) * grey``, per pixel (RGB only)
4. hue: rotate the hue by ``h`` turns in HSV space, keeping saturation and value (RGB only)

with grey ``= 0.299 R + 0.587 G + 0.114 B`` and values clamped to 0-255 (0-1 for float batches) after
every step. Arithmetic is in float32 and rounds once, at the end, where torchvision's uint8 path truncates
after every step; grayscale (one-channel) images get brightness and contrast only. A setting of 0 (the
default) leaves that step out. The CPU path is numpy plus OpenCV's HSV conversion; the batched path a
few elementwise tensor ops. They agree within a grey level.

Example:
    >>> import numpy as np
    >>> op = ColorJitter(brightness=(2.0, 2.0))
    >>> op.apply_pixels(np.full((1, 1, 3), 100, np.uint8), np.array([0.3, 0.0, 0.0, 0.0])).ravel().tolist()
    [200, 200, 200]
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.ops.batched import BatchablePixelOp, check_batch, from_float, to_float, uniforms_array

GREY_WEIGHTS = (0.299, 0.587, 0.114)


class ColorJitter(BatchablePixelOp):
    """Random brightness, contrast, saturation and hue (see the module docstring for the semantics)."""

    draws = 4

    def __init__(
        self,
        brightness: float | Sequence[float] = 0.0,
        contrast: float | Sequence[float] = 0.0,
        saturation: float | Sequence[float] = 0.0,
        hue: float | Sequence[float] = 0.0,
    ) -> None:
        self.brightness = _factor_range(brightness, "brightness")
        self.contrast = _factor_range(contrast, "contrast")
        self.saturation = _factor_range(saturation, "saturation")
        self.hue = _hue_range(hue)

    def factors(self, uniforms: np.ndarray) -> np.ndarray:
        """``[B, 4]``: each sample's brightness, contrast and saturation factors and hue shift (1, 1, 1 and
        0 for the steps left out)."""
        out = np.empty((len(uniforms), 4))
        for column, (span, neutral) in enumerate(
            ((self.brightness, 1.0), (self.contrast, 1.0), (self.saturation, 1.0), (self.hue, 0.0))
        ):
            out[:, column] = neutral if span is None else span[0] + (span[1] - span[0]) * uniforms[:, column]
        return out

    def apply_pixels(self, image: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        brightness, contrast, saturation, hue = self.factors(uniforms_array(uniforms, 4))[0].astype(np.float32)
        color = image.shape[2] == 3
        x = image.astype(np.float32)
        if self.brightness is not None:
            np.clip(np.multiply(x, brightness, out=x), 0, 255, out=x)
        if self.contrast is not None:
            mean = _grey(x).mean(dtype=np.float32)
            _blend(x, contrast, (1 - contrast) * mean)
        if self.saturation is not None and color:
            _blend(x, saturation, (1 - saturation) * _grey(x)[..., None])
        if self.hue is not None and color:
            hsv = cv2.cvtColor(x / np.float32(255), cv2.COLOR_RGB2HSV)  # hue in degrees, 0-360
            hsv[..., 0] = np.mod(hsv[..., 0] + np.float32(hue * 360), np.float32(360))
            x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
            x *= np.float32(255)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def apply_batch(self, batch: torch.Tensor, uniforms: np.ndarray | torch.Tensor) -> torch.Tensor:
        check_batch(batch, self)
        count, channels = batch.shape[:2]
        factors = torch.as_tensor(self.factors(uniforms_array(uniforms, 4, count)), dtype=torch.float32)
        brightness, contrast, saturation, hue = factors.to(batch.device).view(count, 4, 1, 1).unbind(1)
        color = channels == 3
        x = to_float(batch)
        if self.brightness is not None:
            x = x.mul_(brightness.unsqueeze(1)).clamp_(0, 255)
        if self.contrast is not None:
            mean = _grey_batch(x).mean(dim=(-2, -1), keepdim=True)  # [B, 1, 1]
            x = x.mul_(contrast.unsqueeze(1)).add_(((1 - contrast) * mean).unsqueeze(1)).clamp_(0, 255)
        if self.saturation is not None and color:
            grey = _grey_batch(x).unsqueeze(1)
            x = x.mul_(saturation.unsqueeze(1)).add_((1 - saturation).unsqueeze(1) * grey).clamp_(0, 255)
        if self.hue is not None and color:
            x = _rotate_hue(x, hue)
        return from_float(x, batch)


def _factor_range(value: float | Sequence[float], name: str) -> tuple[float, float] | None:
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(f"ColorJitter {name} must be non-negative, got {value}")
        span = (max(0.0, 1.0 - value), 1.0 + value)
    elif isinstance(value, Sequence) and len(value) == 2 and 0 <= value[0] <= value[1]:
        span = (float(value[0]), float(value[1]))
    else:
        raise ConfigError(f"ColorJitter {name} must be a number >= 0 or a (low, high) pair with 0 <= low <= high")
    return None if span == (1.0, 1.0) else span


def _hue_range(value: float | Sequence[float]) -> tuple[float, float] | None:
    if isinstance(value, (int, float)) and 0 <= value <= 0.5:
        span = (-float(value), float(value))
    elif isinstance(value, Sequence) and len(value) == 2 and -0.5 <= value[0] <= value[1] <= 0.5:
        span = (float(value[0]), float(value[1]))
    else:
        raise ConfigError(
            f"ColorJitter hue must be in [0, 0.5] or a (low, high) pair within [-0.5, 0.5], got {value!r}"
        )
    return None if span == (0.0, 0.0) else span


def _grey(x: np.ndarray) -> np.ndarray:
    """Grey levels of an H x W x C float32 image (the channel itself when C is 1)."""
    if x.shape[2] != 3:
        return x[..., 0]
    red, green, blue = (np.float32(w) for w in GREY_WEIGHTS)
    return red * x[..., 0] + green * x[..., 1] + blue * x[..., 2]


def _grey_batch(x: torch.Tensor) -> torch.Tensor:
    """Grey levels ``[B, H, W]`` of a float ``[B, C, H, W]`` batch."""
    if x.shape[1] != 3:
        return x[:, 0]
    red, green, blue = GREY_WEIGHTS
    return red * x[:, 0] + green * x[:, 1] + blue * x[:, 2]


def _blend(x: np.ndarray, factor: np.float32, offset: np.ndarray | np.float32) -> None:
    """``x = clip(factor * x + offset)`` in place."""
    np.multiply(x, factor, out=x)
    np.add(x, offset, out=x)
    np.clip(x, 0, 255, out=x)


def _rotate_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of a float RGB batch (0-255) by ``shift`` turns ([B, 1, 1]), keeping saturation and
    value: RGB to hue sector, shift, and back with the closed form ``v - chroma * clamp(min(k, 4 - k), 0, 1)``."""
    red, green, blue = x.unbind(1)
    value = x.amax(dim=1)
    chroma = value - x.amin(dim=1)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sector = torch.where(
        value == red,
        torch.remainder((green - blue) / safe, 6.0),
        torch.where(value == green, (blue - red) / safe + 2.0, (red - green) / safe + 4.0),
    )
    sector = torch.where(chroma > 0, sector, torch.zeros_like(sector))
    sector = torch.remainder(sector + 6.0 * shift, 6.0)
    planes = []
    for offset in (5.0, 3.0, 1.0):  # red, green, blue
        k = torch.remainder(sector + offset, 6.0)
        planes.append(value - chroma * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(planes, dim=1)
