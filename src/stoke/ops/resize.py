"""``Resize``: to a fixed (height, width), or the shorter side to a length keeping the aspect ratio.

Follows torchvision: ``Resize(256)`` makes the shorter side 256 and the longer ``int(256 * long /
short)``. Downscaling uses area interpolation (antialiased, like torchvision's default on tensors and
Pillow), upscaling bilinear.

Example:
    >>> import numpy as np
    >>> from stoke.ops.base import Geometry
    >>> g = Resize(50).plan(Geometry.identity(100, 200), np.empty(0))
    >>> (g.height, g.width)
    (50, 100)
"""

from __future__ import annotations

import numpy as np

from stoke.errors import ConfigError
from stoke.ops.base import Geometry, SampleOp, pair


class Resize(SampleOp):
    """Resize to ``size``: an int sets the shorter side, a (height, width) pair the exact size."""

    def __init__(self, size: int | tuple[int, int]) -> None:
        if isinstance(size, int):
            if size < 1:
                raise ConfigError(f"Resize size must be positive, got {size}")
            self.size: int | tuple[int, int] = size
        else:
            self.size = pair(size, "Resize size")

    def target(self, height: int, width: int) -> tuple[int, int]:
        if not isinstance(self.size, int):
            return self.size
        if width <= height:
            return int(self.size * height / width), self.size
        return self.size, int(self.size * width / height)

    def output_size(self, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if not isinstance(self.size, int):
            return self.size
        return None if size is None else self.target(*size)

    def plan(self, geometry: Geometry, uniforms: np.ndarray) -> Geometry:
        return geometry.resize(*self.target(geometry.height, geometry.width))
