"""Bilinear crop-resize-flip of one image straight into its batch row, by stoke's own kernel.

OpenCV's bilinear resize gathers interleaved RGB pixels one at a time in its horizontal pass; on the
development machine it takes 74 µs for a 300→224 crop, and stoke then had to flip the result and split
it into CHW planes (another 13 µs). For raw pixel records that was about four fifths of the time per
image. ``_resample.c`` does all three in one pass with AVX-512 VBMI byte permutes: tables built once per
crop say which two source bytes every output byte blends, with the flip and the CHW order folded into
them, so the same crop takes about 30 µs (HWC) or 35 µs (CHW). The arithmetic is fixed-point and
documented in the C file; the result is within one grey level of exact bilinear interpolation, as
OpenCV's is, and the kernel's scalar reference gives the same bytes as its SIMD path.

Which resize runs: the kernel when it was compiled (``pip install`` builds it; it needs a C compiler) and
the CPU has AVX-512 VBMI (Intel since Ice Lake, AMD since Zen 4); else OpenCV, whose pixels differ by at
most one grey level. ``STOKE_RESAMPLE=opencv`` forces OpenCV. The choice is made once per process, so
batches are reproducible on one machine whatever the workers. :func:`backend` says which one runs.

Example:
    >>> import numpy as np
    >>> image = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    >>> planes = np.empty((3, 2, 2), np.uint8)
    >>> if compiled():
    ...     resize(image, planes, planar=True, flip_x=False, flip_y=False)
    ... else:  # OpenCV, which stoke uses then, gives these pixels too
    ...     import cv2
    ...     planes[:] = cv2.resize(image, (2, 2)).transpose(2, 0, 1)
    >>> planes[0].tolist()
    [[8, 14], [32, 38]]
"""

from __future__ import annotations

import os

import numpy as np

from stoke.errors import ConfigError

try:
    from stoke.pipeline import _resample
except ImportError:  # not compiled: stoke resizes with OpenCV
    _resample = None

ENV = "STOKE_RESAMPLE"


def _choose() -> bool:
    setting = os.environ.get(ENV, "").strip().lower()
    if setting not in ("", "auto", "opencv", "stoke"):
        raise ConfigError(f"{ENV}={setting!r} is not one of auto, stoke, opencv; set one of them or unset it")
    if setting == "opencv" or _resample is None:
        return False
    return _resample.simd() != "scalar"  # the scalar reference is slower than OpenCV: only for tests


_USE = _choose()


def available() -> bool:
    """Whether :func:`resize` is the resize stoke uses in this process."""
    return _USE


def backend() -> str:
    """``"stoke-avx512vbmi"`` when stoke's kernel resizes, else ``"opencv"``."""
    return f"stoke-{_resample.simd()}" if _USE else "opencv"


def resize(
    source: np.ndarray, target: np.ndarray, *, planar: bool, flip_x: bool, flip_y: bool, simd: bool = True
) -> None:
    """Resize ``source`` (H×W×C uint8, packed pixels, rows may be strided) bilinearly into ``target``,
    mirrored as asked: ``target`` is C-contiguous uint8, C×h×w when ``planar``, else h×w×C.

    ``simd=False`` runs the kernel's scalar reference (tests). Raises RuntimeError if the kernel was not
    compiled; callers check :func:`available` first.
    """
    if _resample is None:
        raise ConfigError("stoke's resize kernel is not compiled here; reinstall stoke with a C compiler")
    _resample.resize(source, target, planar, flip_x, flip_y, simd)


def compiled() -> bool:
    """Whether the kernel was compiled (its scalar reference then runs on any CPU)."""
    return _resample is not None
