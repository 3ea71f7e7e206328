"""``GaussianBlur``: blur each image with a Gaussian whose sigma is drawn per sample from ``sigma``.

torchvision's semantics: a ``kernel_size`` (odd; an int or a (height, width) pair) Gaussian with taps at
``-(k-1)/2 .. (k-1)/2`` pixels, ``exp(-x**2 / (2 sigma**2))`` normalised to sum 1, applied separably
(along rows, then columns), with the image mirrored at its edges without repeating the edge pixel
(``dcb|abcd``, OpenCV's BORDER_REFLECT_101, torch's "reflect"). Sigma is uniform in ``sigma = (low,
high)``. The CPU path is one ``cv2.sepFilter2D`` in float32 (GIL released); the batched path two
grouped convolutions, one kernel per sample; both round once at the end and agree within a grey level.
An image must be larger than half the kernel in each direction. Not a box or median filter.

Example:
    >>> import numpy as np
    >>> blur = GaussianBlur(5, sigma=(1.0, 2.0))
    >>> blur.sigmas(np.array([[0.0], [1.0]])).tolist()
    [1.0, 2.0]
    >>> image = np.full((6, 6, 3), 77, np.uint8)  # a constant image stays constant
    >>> bool((blur.apply_pixels(image, np.array([0.5])) == 77).all())
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from stoke.errors import ConfigError
from stoke.ops.base import pair
from stoke.ops.batched import BatchablePixelOp, check_batch, from_float, to_float, uniforms_array


class GaussianBlur(BatchablePixelOp):
    """Gaussian blur of ``kernel_size`` taps with sigma uniform in ``sigma`` (see the module docstring)."""

    draws = 1

    def __init__(self, kernel_size: int | tuple[int, int], sigma: float | Sequence[float] = (0.1, 2.0)) -> None:
        height, width = pair(kernel_size, "GaussianBlur kernel_size")
        if height % 2 == 0 or width % 2 == 0:
            raise ConfigError(f"GaussianBlur kernel_size must be odd, got {kernel_size!r}")
        if isinstance(sigma, (int, float)):
            low = high = float(sigma)
        elif isinstance(sigma, Sequence) and len(sigma) == 2:
            low, high = float(sigma[0]), float(sigma[1])
        else:
            raise ConfigError(f"GaussianBlur sigma must be a number or a (low, high) pair, got {sigma!r}")
        if not 0 < low <= high:
            raise ConfigError(f"GaussianBlur sigma must satisfy 0 < low <= high, got {sigma!r}")
        self.kernel_size = (height, width)
        self.sigma = (low, high)

    def sigmas(self, uniforms: np.ndarray) -> np.ndarray:
        """Each sample's sigma from its uniforms ``[B, 1]``."""
        low, high = self.sigma
        return low + (high - low) * uniforms[:, 0]

    def kernels(self, uniforms: np.ndarray, taps: int) -> np.ndarray:
        """``[B, taps]`` float32 Gaussian kernels, one per sample, each summing to 1."""
        offsets = np.arange(taps) - (taps - 1) / 2.0
        weights = np.exp(-0.5 * (offsets[None, :] / self.sigmas(uniforms)[:, None]) ** 2)
        return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)

    def apply_pixels(self, image: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        self._check_size(image.shape[0], image.shape[1])
        uniforms = uniforms_array(uniforms, 1)
        along_y, along_x = (self.kernels(uniforms, taps)[0] for taps in self.kernel_size)
        blurred = cv2.sepFilter2D(image, cv2.CV_32F, along_x, along_y, borderType=cv2.BORDER_REFLECT_101)
        return np.clip(np.rint(blurred), 0, 255).astype(np.uint8).reshape(image.shape)

    def apply_batch(self, batch: torch.Tensor, uniforms: np.ndarray | torch.Tensor) -> torch.Tensor:
        check_batch(batch, self)
        count, channels, height, width = batch.shape
        self._check_size(height, width)
        uniforms = uniforms_array(uniforms, 1, count)
        taps_y, taps_x = self.kernel_size
        # One kernel per (sample, channel) plane: a grouped convolution over B*C planes.
        along_y, along_x = (
            torch.as_tensor(np.repeat(self.kernels(uniforms, taps), channels, axis=0)).to(batch.device)
            for taps in self.kernel_size
        )
        planes = to_float(batch).contiguous().view(1, count * channels, height, width)
        padded = F.pad(planes, (taps_x // 2, taps_x // 2, taps_y // 2, taps_y // 2), mode="reflect")
        rows = F.conv2d(padded, along_x.view(-1, 1, 1, taps_x), groups=count * channels)
        blurred = F.conv2d(rows, along_y.view(-1, 1, taps_y, 1), groups=count * channels)
        return from_float(blurred.view(count, channels, height, width), batch)

    def _check_size(self, height: int, width: int) -> None:
        if height <= self.kernel_size[0] // 2 or width <= self.kernel_size[1] // 2:
            raise ConfigError(
                f"a {height}x{width} image is too small for GaussianBlur's {self.kernel_size[0]}x"
                f"{self.kernel_size[1]} kernel; use a smaller kernel_size or blur after resizing"
            )
