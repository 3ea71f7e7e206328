"""The GIL-bound transform ``stoke bench --user-transform`` adds: Python code as users write it.

A per-row contrast stretch, written the way a user writes a quick augmentation: a Python loop over the
rows with small numpy calls in it. Each call is short, so the interpreter, not numpy, dominates, and
the GIL is held nearly all the time: threads cannot run it in parallel, processes can. The benchmark
applies it after the crop and flip, to the same uint8 height x width x channels image, in the baseline's
``Dataset`` and as ``stoke.ops.Map(stretch_rows)``.

Example:
    >>> import numpy as np
    >>> image = np.array([[[10], [20], [30]]], np.uint8)
    >>> stretch_rows(image).ravel().tolist()
    [0, 127, 255]
"""

from __future__ import annotations

import numpy as np


def stretch_rows(image: np.ndarray) -> np.ndarray:
    """Each row's values stretched to 0..255 (a flat row is left as it is); returns a new array."""
    out = image.copy()
    for row in out:
        low, high = int(row.min()), int(row.max())
        if high > low:
            row[:] = (row.astype(np.uint16) - low) * 255 // (high - low)
    return out
