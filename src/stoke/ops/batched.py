"""Pixel ops that also run batched on a tensor, and the batch op that runs one after the batch is formed.

A :class:`BatchablePixelOp` has two implementations of the same semantics:

* ``apply_pixels(image, uniforms)``: one uint8 H x W x C image on the CPU (numpy and OpenCV, in the
  Loader's workers, before the image joins its batch);
* ``apply_batch(batch, uniforms)``: a whole ``[B, C, H, W]`` tensor on any torch device, uint8 (values
  0-255) or floating point (values 0-1), in any memory format (channels_last stays channels_last), with
  one row of ``uniforms`` per sample: a handful of tensor ops, no Python loop over images.

Both derive their per-sample parameters from the uniforms with one shared numpy function, so they draw
the very same angles, factors and boxes; only the pixel arithmetic differs (a grey level or two where
OpenCV rounds differently). Not for ops without a batched form, such as ``Map`` (the user's function).

When such an op follows a batch op in a field's transforms (for instance after ``ToDevice``), the
pipeline wraps it in :class:`OnBatch`, which draws the uniforms the CPU path would have drawn for it,
from (seed, epoch, sample index, op position), and runs ``apply_batch`` where the batch lives.

Example:
    >>> import numpy as np, torch
    >>> from stoke.ops import Grayscale
    >>> batch = torch.tensor([[[[10]], [[20]], [[30]]]], dtype=torch.uint8)  # one 1x1 RGB image
    >>> Grayscale().apply_batch(batch, np.empty((1, 0))).flatten().tolist()
    [18, 18, 18]
    >>> image = batch[0].permute(1, 2, 0).numpy().copy()  # the same image, H x W x C
    >>> Grayscale().apply_pixels(image, np.empty(0))  # changes it in place
    >>> image.ravel().tolist()
    [18, 18, 18]
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.ops.base import BatchContext, BatchOp, PixelOp
from stoke.rng import sample_uniforms


class BatchablePixelOp(PixelOp):
    """A pixel op with a batched torch implementation of the same semantics (see the module docstring)."""

    @abstractmethod
    def apply_batch(self, batch: torch.Tensor, uniforms: np.ndarray | torch.Tensor) -> torch.Tensor:
        """This op on every image of ``batch`` ([B, C, H, W], uint8 or float in [0, 1]), sample ``i`` with
        ``uniforms[i]`` (``[B, draws]``); returns a new tensor of the same dtype, device and memory format."""


class OnBatch(BatchOp):
    """Runs ``op`` batched where the batch lives, with the uniforms of random stream ``stream``."""

    def __init__(self, op: BatchablePixelOp, stream: int) -> None:
        self.op = op
        self.stream = stream

    def apply(self, batch: torch.Tensor, context: BatchContext) -> torch.Tensor:
        draws = self.op.draws
        uniforms = (
            sample_uniforms(context.seed, context.epoch, self.stream, context.indices, draws)
            if draws
            else np.empty((len(context.indices), 0))
        )
        return self.op.apply_batch(batch, uniforms)


def uniforms_array(uniforms: np.ndarray | torch.Tensor, draws: int, rows: int | None = None) -> np.ndarray:
    """The uniforms as a float64 ``[rows, draws]`` numpy array, validated."""
    array = uniforms.detach().cpu().numpy() if isinstance(uniforms, torch.Tensor) else np.asarray(uniforms)
    if draws:
        array = array.astype(np.float64, copy=False).reshape(-1, draws)
    else:  # nothing to infer the row count from but the shape
        array = np.empty((rows if rows is not None else len(array) if array.ndim == 2 else 1, 0))
    if rows is not None and len(array) != rows:
        raise ConfigError(f"got uniforms for {len(array)} samples for a batch of {rows}; give one row per sample")
    return array


def check_batch(batch: torch.Tensor, op: object) -> None:
    """Refuse what is not an NCHW image batch of uint8 or floats."""
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        got = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
        raise ConfigError(f"{op!r} expects an image batch [B, C, H, W], got {got}")
    if batch.dtype != torch.uint8 and not batch.dtype.is_floating_point:
        raise ConfigError(f"{op!r} takes uint8 (0-255) or floating-point (0-1) images, got {batch.dtype}")


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """The batch as float32 on the 0-255 scale (uint8 as it is, floats times 255), a new tensor."""
    return batch.to(torch.float32) if batch.dtype == torch.uint8 else batch.to(torch.float32) * 255.0


def from_float(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Float32 values on the 0-255 scale back to ``like``'s dtype (rounded for uint8, 0-1 for floats) and
    memory format."""
    if like.dtype == torch.uint8:
        out = values.round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = (values / 255.0).to(like.dtype)
    return keep_format(out, like)


def keep_format(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``out`` in channels_last memory format when ``like`` is (and is not also plainly contiguous)."""
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out


def fill_values(fill: int | Sequence[int], what: str) -> tuple[int, ...]:
    """A fill grey level (0-255) or one per channel, validated."""
    values = (fill,) if isinstance(fill, (int, np.integer)) else tuple(fill)
    if not values or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in values):
        raise ConfigError(f"{what} must be a grey level 0-255 or one per channel, got {fill!r}")
    return tuple(int(v) for v in values)


def fill_for(fill: tuple[int, ...], channels: int, what: Any) -> tuple[int, ...]:
    """The fill with one value per channel of an image with ``channels`` channels."""
    if len(fill) == 1:
        return fill * channels
    if len(fill) != channels:
        raise ConfigError(
            f"{what!r} has {len(fill)} fill values for a {channels}-channel image; give one or {channels}"
        )
    return fill
