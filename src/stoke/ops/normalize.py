"""``Normalize``: ``(x / 255 - mean) / std`` per channel, to float, on whatever device the batch is on.

uint8 input is scaled to [0, 1] first (the convention of torchvision's ToTensor + Normalize); float
input is normalized as it is. The memory format (channels_last or not) is kept.

Example:
    >>> import torch
    >>> op = Normalize(mean=[0.5], std=[0.5])
    >>> op.apply(torch.full((1, 1, 1, 2), 255, dtype=torch.uint8), None).tolist()
    [[[[1.0, 1.0]]]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from stoke.errors import ConfigError
from stoke.ops.base import BatchContext, BatchOp


class Normalize(BatchOp):
    """Per-channel standardisation of an NCHW batch; outputs ``dtype`` (float32 by default)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32) -> None:
        if len(mean) != len(std) or not mean:
            raise ConfigError(f"mean {mean} and std {std} must be non-empty and of the same length")
        if any(value == 0 for value in std):
            raise ConfigError(f"Normalize std {std} holds a zero, which would divide by zero; give positive deviations")
        if not dtype.is_floating_point:
            raise ConfigError(
                f"Normalize outputs floating-point values, not {dtype}; give a dtype such as torch.float32"
            )
        self.mean = [float(value) for value in mean]
        self.std = [float(value) for value in std]
        self.dtype = dtype
        self._constants: dict[tuple[Any, bool], tuple[torch.Tensor, torch.Tensor]] = {}

    def output_dtype(self, dtype: Any) -> torch.dtype:
        return self.dtype

    def apply(self, batch: torch.Tensor, context: BatchContext | None) -> torch.Tensor:
        if batch.ndim != 4 or batch.shape[1] != len(self.mean):
            raise ConfigError(
                f"Normalize expects an NCHW batch with {len(self.mean)} channels, got {tuple(batch.shape)}"
            )
        scaled = batch.dtype == torch.uint8
        key = (batch.device, scaled)
        if key not in self._constants:
            factor = 255.0 if scaled else 1.0
            shape = (1, len(self.mean), 1, 1)
            shift = torch.tensor([m * factor for m in self.mean], dtype=torch.float32).reshape(shape)
            scale = torch.tensor([1.0 / (s * factor) for s in self.std], dtype=torch.float32).reshape(shape)
            self._constants[key] = (shift.to(batch.device), scale.to(batch.device))
        shift, scale = self._constants[key]
        normalized = batch.to(torch.float32).sub_(shift).mul_(scale)
        return normalized if self.dtype == torch.float32 else normalized.to(self.dtype)
