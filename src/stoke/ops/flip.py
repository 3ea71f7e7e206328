"""``RandomHorizontalFlip``: mirror left-right with probability ``p``.

Example:
    >>> import numpy as np
    >>> from stoke.ops.base import Geometry
    >>> RandomHorizontalFlip(p=1.0).plan(Geometry.identity(4, 6), np.array([0.3])).source_box()[-1]
    True
"""

from __future__ import annotations

import numpy as np

from stoke.errors import ConfigError
from stoke.ops.base import Geometry, SampleOp


class RandomHorizontalFlip(SampleOp):
    """Mirror the image left-right with probability ``p``."""

    draws = 1

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"flip probability must be between 0 and 1, got {p}")
        self.p = float(p)

    def plan(self, geometry: Geometry, uniforms: np.ndarray) -> Geometry:
        return geometry.flip_horizontal() if uniforms[0] < self.p else geometry
