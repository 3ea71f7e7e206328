"""``Cutout``: fill ``count`` random boxes of each image with ``fill`` (DeVries & Taylor, 2017).

Each box is either ``size`` pixels (an int or a (height, width) pair) or, with ``scale=(low, high)``, a
box of the image's aspect ratio covering a fraction of its area drawn uniformly from that range. Its
centre is a pixel drawn uniformly from the whole image, and the box is clipped at the image's edges, so
boxes near an edge cover less (as in the paper). ``fill`` is a grey level or one per channel (on the
0-255 scale; float batches get ``fill / 255``). Boxes may overlap. The boxes are integer pixel ranges
computed by one function for both paths, so the CPU path (numpy slice assignment, in place) and the
batched path (one mask for the whole batch) give identical pixels. Not RandomErasing's random values.

Example:
    >>> import numpy as np
    >>> op = Cutout(size=2, fill=9)
    >>> op.boxes(np.array([[0.5, 0.5]]), 4, 4).tolist()  # (top, left, bottom, right) of each box
    [[[1, 1, 3, 3]]]
    >>> image = np.zeros((4, 4, 1), np.uint8)
    >>> op.apply_pixels(image, np.array([0.5, 0.5]))
    >>> int(image.sum()) == 4 * 9
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.ops.base import pair
from stoke.ops.batched import BatchablePixelOp, check_batch, fill_for, fill_values, keep_format, uniforms_array


class Cutout(BatchablePixelOp):
    """Fill ``count`` boxes of ``size`` pixels (or of ``scale`` of the area) with ``fill``."""

    def __init__(
        self,
        size: int | tuple[int, int] | None = None,
        scale: Sequence[float] | None = None,
        count: int = 1,
        fill: int | Sequence[int] = 0,
    ) -> None:
        if (size is None) == (scale is None):
            raise ConfigError("Cutout needs either size= (pixels) or scale= (a (low, high) fraction of the area)")
        self.size = pair(size, "Cutout size") if size is not None else None
        if scale is not None:
            if not (isinstance(scale, Sequence) and len(scale) == 2 and 0 <= scale[0] <= scale[1] <= 1):
                raise ConfigError(f"Cutout scale must be a (low, high) pair with 0 <= low <= high <= 1, got {scale!r}")
            self.scale: tuple[float, float] | None = (float(scale[0]), float(scale[1]))
        else:
            self.scale = None
        if not isinstance(count, int) or count < 1:
            raise ConfigError(f"Cutout count must be a positive integer, got {count!r}")
        self.count = count
        self.fill = fill_values(fill, "Cutout fill")

    @property
    def draws(self) -> int:  # type: ignore[override]
        """Two uniforms per box (its centre), three with ``scale`` (its area)."""
        return self.count * (3 if self.scale is not None else 2)

    def boxes(self, uniforms: np.ndarray, height: int, width: int) -> np.ndarray:
        """``[B, count, 4]`` int64 boxes (top, left, bottom, right), clipped to the image, from ``[B, draws]``."""
        per_box = uniforms.reshape(len(uniforms), self.count, -1)
        if self.scale is None:
            assert self.size is not None
            box_height = np.full(per_box.shape[:2], self.size[0])
            box_width = np.full(per_box.shape[:2], self.size[1])
        else:
            low, high = self.scale
            side = np.sqrt(low + (high - low) * per_box[..., 2])
            box_height, box_width = np.rint(height * side).astype(np.int64), np.rint(width * side).astype(np.int64)
        center_y = np.minimum((per_box[..., 0] * height).astype(np.int64), height - 1)
        center_x = np.minimum((per_box[..., 1] * width).astype(np.int64), width - 1)
        top, left = center_y - box_height // 2, center_x - box_width // 2
        return np.stack(
            (
                np.clip(top, 0, height),
                np.clip(left, 0, width),
                np.clip(top + box_height, 0, height),
                np.clip(left + box_width, 0, width),
            ),
            axis=-1,
        ).astype(np.int64)

    def apply_pixels(self, image: np.ndarray, uniforms: np.ndarray) -> None:
        height, width, channels = image.shape
        fill = np.array(fill_for(self.fill, channels, self), np.uint8)
        for top, left, bottom, right in self.boxes(uniforms_array(uniforms, self.draws, 1), height, width)[0]:
            image[top:bottom, left:right] = fill

    def apply_batch(self, batch: torch.Tensor, uniforms: np.ndarray | torch.Tensor) -> torch.Tensor:
        check_batch(batch, self)
        count, channels, height, width = batch.shape
        boxes = torch.as_tensor(self.boxes(uniforms_array(uniforms, self.draws, count), height, width))
        top, left, bottom, right = boxes.to(batch.device).unsqueeze(-1).unbind(2)  # each [B, count, 1]
        rows = torch.arange(height, device=batch.device)
        columns = torch.arange(width, device=batch.device)
        in_rows = (rows >= top) & (rows < bottom)  # [B, count, H]
        in_columns = (columns >= left) & (columns < right)  # [B, count, W]
        mask = (in_rows.unsqueeze(-1) & in_columns.unsqueeze(-2)).any(dim=1)  # [B, H, W]
        fill = torch.tensor(fill_for(self.fill, channels, self), dtype=torch.float32)
        fill = (fill if batch.dtype == torch.uint8 else fill / 255.0).to(batch.dtype).to(batch.device)
        return keep_format(torch.where(mask.unsqueeze(1), fill.view(1, channels, 1, 1), batch), batch)
