"""``Map``: the user's own function on each image, run by the Loader's workers.

The function gets the image after the geometric ops (crop, resize, flip) as a writable uint8 array of
shape (height, width, channels), and either changes it in place and returns None or returns a new uint8
array of the same shape. With ``random=True`` it also gets a ``numpy.random.Generator`` keyed by (seed,
epoch, sample index, op position), so its augmentation is reproducible and independent of the worker
that runs it.

A function written in pure Python holds the GIL: give such a Loader ``workers="process"``
(``stoke.pipeline.processes``); functions that spend their time in numpy or OpenCV run well on threads.

Example:
    >>> import numpy as np
    >>> invert = Map(lambda image: 255 - image)
    >>> invert.apply_pixels(np.zeros((1, 2, 1), np.uint8), np.empty(0)).ravel().tolist()
    [255, 255]
    >>> noise = Map(lambda image, rng: image + rng.integers(0, 2, image.shape, dtype=np.uint8), random=True)
    >>> noise.draws
    1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from stoke.errors import ConfigError
from stoke.ops.base import PixelOp


class Map(PixelOp):
    """Apply ``function(image)`` (or ``function(image, rng)`` with ``random=True``) to each image."""

    def __init__(self, function: Callable[..., Any], random: bool = False) -> None:
        if not callable(function):
            raise ConfigError(f"Map needs a function, got {function!r}")
        self.function = function
        self.random = bool(random)
        self.draws = 1 if random else 0

    def apply_pixels(self, image: np.ndarray, uniforms: np.ndarray) -> np.ndarray | None:
        if not self.random:
            return self.function(image)
        key = int(uniforms[0] * (1 << 53))  # 53 random bits from this sample's counter
        return self.function(image, np.random.Generator(np.random.Philox(key=key)))
