"""``Grayscale`` and ``RandomGrayscale``: replace an RGB image by its grey levels, keeping three channels.

grey ``= 0.299 R + 0.587 G + 0.114 B`` (ITU-R 601, as torchvision and Pillow), written into all three
channels so the batch keeps its shape, as torchvision's ``RandomGrayscale`` does. ``RandomGrayscale(p)``
does it with probability ``p`` per sample; ``Grayscale()`` always. One-channel images are left as they
are. On uint8 pixels the CPU path is OpenCV's ``cvtColor`` and the batched path the same 15-bit
fixed-point sum OpenCV uses, so the two agree to the grey level; float batches use the float weights.

Example:
    >>> import numpy as np
    >>> image = np.array([[[255, 0, 0]]], np.uint8)
    >>> RandomGrayscale(p=0.5).apply_pixels(image, np.array([0.7]))  # 0.7 >= p: left alone
    >>> image.ravel().tolist()
    [255, 0, 0]
    >>> Grayscale().apply_pixels(image, np.empty(0))  # in place
    >>> image.ravel().tolist()
    [76, 76, 76]
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.ops.batched import BatchablePixelOp, check_batch, keep_format, uniforms_array

_FIXED_WEIGHTS = (9798, 19235, 3735)  # 0.299, 0.587, 0.114 in 15-bit fixed point (OpenCV's RGB2GRAY)
_FIXED_SHIFT = 15


class RandomGrayscale(BatchablePixelOp):
    """Turn the image grey with probability ``p`` (three equal channels)."""

    draws = 1

    def __init__(self, p: float = 0.1) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"grayscale probability must be between 0 and 1, got {p}")
        self.p = float(p)

    def chosen(self, uniforms: np.ndarray) -> np.ndarray:
        """Which samples turn grey, from their uniforms ``[B, draws]``."""
        return uniforms[:, 0] < self.p if self.draws else np.ones(len(uniforms), bool)

    def apply_pixels(self, image: np.ndarray, uniforms: np.ndarray) -> np.ndarray | None:
        if image.shape[2] != 3 or not self.chosen(uniforms_array(uniforms, self.draws, 1))[0]:
            return None
        image[:] = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[..., None]
        return None

    def apply_batch(self, batch: torch.Tensor, uniforms: np.ndarray | torch.Tensor) -> torch.Tensor:
        check_batch(batch, self)
        chosen = self.chosen(uniforms_array(uniforms, self.draws, batch.shape[0]))
        if batch.shape[1] != 3 or not chosen.any():
            return batch.clone()
        if batch.dtype == torch.uint8:
            weighted = batch.to(torch.int32)
            red, green, blue = _FIXED_WEIGHTS
            total = weighted[:, 0] * red + weighted[:, 1] * green + weighted[:, 2] * blue
            grey = ((total + (1 << (_FIXED_SHIFT - 1))) >> _FIXED_SHIFT).to(torch.uint8)
        else:
            grey = (0.299 * batch[:, 0] + 0.587 * batch[:, 1] + 0.114 * batch[:, 2]).to(batch.dtype)
        mask = torch.as_tensor(chosen).to(batch.device).view(-1, 1, 1, 1)
        return keep_format(torch.where(mask, grey.unsqueeze(1).expand_as(batch), batch), batch)


class Grayscale(RandomGrayscale):
    """Turn every image grey (three equal channels)."""

    draws = 0

    def __init__(self) -> None:
        super().__init__(p=1.0)
