"""What an op is: sample ops plan geometry per image, pixel ops change each image, batch ops whole tensors.

Three kinds, because they run in different places:

* :class:`SampleOp` — crop, resize, flip. It does not touch pixels: it maps a :class:`Geometry` (which
  source pixels each output pixel comes from) to a new one, using random numbers drawn for it from
  (seed, epoch, sample index, op position). The pipeline then decodes, crops, resizes and flips each
  image in one pass, straight into the batch buffer, whatever the order of the ops, and can pick a
  reduced JPEG decoding scale because it knows the final crop before decoding.
* :class:`PixelOp` — runs on each image's pixels (uint8, height x width x channels) once the geometry
  has been rendered, in the worker, before the image joins its batch: ``stoke.ops.Map`` wraps the
  user's own function.
* :class:`BatchOp` — normalize, move to a device. It runs on the assembled batch tensor, on the device
  the batch is on.

Every op declares what it outputs (``output_size`` for sample ops, ``output_dtype`` for batch ops) so the
Loader allocates its buffers once.

Example:
    >>> geometry = Geometry.identity(100, 200).crop(10, 20, 50, 50).resize(25, 25)
    >>> geometry.source_box()
    (10.0, 20.0, 60.0, 70.0, False, False)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from stoke.errors import ConfigError

if TYPE_CHECKING:
    import torch


class Geometry:
    """Output pixel (y, x) samples source point (ay*y + by, ax*x + bx) of the displayed, full-size image.

    Coordinates are continuous pixel edges: output ``[0, height] x [0, width]`` maps onto a source box.
    A negative scale means a flip. Immutable; a plain slotted class rather than a dataclass because
    several are made per image on the hot path, and ``dataclasses.replace`` costs microseconds each.
    """

    __slots__ = ("ax", "ay", "bx", "by", "height", "width")

    def __init__(self, height: int, width: int, ay: float, by: float, ax: float, bx: float) -> None:
        self.height, self.width, self.ay, self.by, self.ax, self.bx = height, width, ay, by, ax, bx

    @classmethod
    def identity(cls, height: int, width: int) -> Geometry:
        return cls(height, width, 1.0, 0.0, 1.0, 0.0)

    def crop(self, top: float, left: float, height: int, width: int) -> Geometry:
        """Keep output rows [top, top+height) and columns [left, left+width) (may extend past the edges)."""
        return Geometry(height, width, self.ay, self.by + self.ay * top, self.ax, self.bx + self.ax * left)

    def resize(self, height: int, width: int) -> Geometry:
        """Resample the current output to ``height`` x ``width``."""
        return Geometry(height, width, self.ay * self.height / height, self.by, self.ax * self.width / width, self.bx)

    def flip_horizontal(self) -> Geometry:
        return Geometry(self.height, self.width, self.ay, self.by, -self.ax, self.bx + self.ax * self.width)

    def source_box(self) -> tuple[float, float, float, float, bool, bool]:
        """(top, left, bottom, right) in source pixels, and whether rows and columns come out reversed."""
        y_end, x_end = self.by + self.ay * self.height, self.bx + self.ax * self.width
        return (
            min(self.by, y_end),
            min(self.bx, x_end),
            max(self.by, y_end),
            max(self.bx, x_end),
            self.ay < 0,
            self.ax < 0,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Geometry) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __repr__(self) -> str:
        return (
            "Geometry("
            + ", ".join(f"{k}={getattr(self, k)!r}" for k in ("height", "width", "ay", "by", "ax", "bx"))
            + ")"
        )


class Op:
    """Base of every op."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{key}={value!r}" for key, value in vars(self).items() if not key.startswith("_"))
        return f"{type(self).__name__}({settings})"


class SampleOp(Op, ABC):
    """A geometric op planned per image from ``draws`` uniform random numbers (see the module docstring)."""

    draws: int = 0

    @abstractmethod
    def plan(self, geometry: Geometry, uniforms: np.ndarray) -> Geometry:
        """The geometry after this op, given this sample's ``draws`` uniforms in [0, 1)."""

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        """The output (height, width) for an input of ``size`` (None: varies per image)."""
        return size


class PixelOp(Op, ABC):
    """An op on one image's pixels after the geometric ops, drawing ``draws`` uniforms per sample."""

    draws: int = 0

    @abstractmethod
    def apply_pixels(self, image: np.ndarray, uniforms: np.ndarray) -> np.ndarray | None:
        """Change ``image`` (uint8, H x W x C, writable) in place and return None, or return a new uint8
        array of the same shape."""


@dataclass(frozen=True)
class BatchContext:
    """What a batch op may key its randomness on: the Loader's seed, the epoch and the batch's indices."""

    seed: int
    epoch: int
    indices: np.ndarray


class BatchOp(Op, ABC):
    """An op on a whole batch tensor, run where the tensor lives (CPU or device)."""

    @abstractmethod
    def apply(self, batch: torch.Tensor, context: BatchContext) -> torch.Tensor:
        """The transformed batch."""

    def output_dtype(self, dtype: Any) -> Any:
        """The torch dtype this op outputs for an input of ``dtype``."""
        return dtype


def pair(size: int | tuple[int, int] | list[int], what: str) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair, validated positive."""
    if isinstance(size, int):
        height = width = size
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        height, width = size
    else:
        raise ConfigError(f"{what} must be an int or a (height, width) pair of ints, got {size!r}")
    if height < 1 or width < 1:
        raise ConfigError(f"{what} must be positive, got {size!r}")
    return height, width
