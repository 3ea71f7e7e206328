"""Decode only the region of a JPEG that a crop needs, with libjpeg-turbo's TurboJPEG 3 API.

A RandomResizedCrop keeps on average about half of the image. libjpeg-turbo can skip the inverse DCT,
upsampling and colour conversion of everything outside a region (``tj3SetCroppingRegion``: whole
iMCU columns left and right of it are skipped, rows above it are entropy-decoded only, rows below it
are not decoded at all), and combine that with DCT-domain downscaling (``tj3SetScalingFactor``). On the
benchmark photographs this decodes a typical crop about 1.4 times as fast as the whole image.

Neither simplejpeg nor Pillow nor OpenCV exposes region decoding, so stoke calls ``libturbojpeg`` itself,
through :mod:`ctypes`: no compiler is needed, and ctypes releases the GIL for the length of each call, so
decoder threads run in parallel. The TurboJPEG API reports errors by return code, never by ``longjmp``
out of a callback, which is what makes it safe to call this way. One handle per thread.

Which library: the path in ``STOKE_TURBOJPEG`` if set (``off`` turns region decoding off); else the
system's ``libturbojpeg`` when it has the version 3 API; else the copy bundled in the ``turbojpeg`` wheel
(a default dependency of ``pip install stoke``). Without any, :func:`available` is false and stoke
decodes whole images with simplejpeg, which gives the same pixels.

Exactness: a region decodes to exactly the pixels of a full decode, except the first column of a region
that does not start at the image's left edge (fancy upsampling sees an edge there). :func:`decode_region`
therefore widens every request by one iMCU on the left and right, so that the pixels a caller asked for
are bit-identical to a full decode's.

Example:
    >>> import numpy as np, simplejpeg
    >>> image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    >>> data = simplejpeg.encode_jpeg(image, quality=90, colorsubsampling="420")
    >>> if available():
    ...     window = decode_region(data, "RGB", 64, 96, 1, (10, 40, 30, 70), fast=False)
    ...     full = simplejpeg.decode_jpeg(data)
    ...     y, x = window.origin
    ...     same = (window.pixels[10 - y : 30 - y, 40 - x : 70 - x] == full[10:30, 40:70]).all()
    ... else:
    ...     same = True
    >>> bool(same)
    True
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib.metadata
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stoke.errors import ConfigError, FormatError

# TurboJPEG 3 constants (turbojpeg.h).
_TJINIT_DECOMPRESS = 1
_TJPARAM_STOPONWARNING = 0
_TJPARAM_SUBSAMP = 4
_TJPARAM_JPEGWIDTH = 5
_TJPARAM_JPEGHEIGHT = 6
_TJPARAM_FASTUPSAMPLE = 9
_TJPARAM_FASTDCT = 10
_TJPF_RGB, _TJPF_GRAY = 0, 6
_TJERR_WARNING = 0
# iMCU width in pixels for TJSAMP_444, 422, 420, GRAY, 440, 411, 441 (tjMCUWidth in turbojpeg.h).
_MCU_WIDTH = (8, 16, 16, 8, 8, 32, 8)
_MCU_HEIGHT = (8, 8, 16, 8, 16, 8, 32)  # by TJSAMP: 444, 422, 420, gray, 440, 411, 441
_PIXEL_FORMAT = {"RGB": (_TJPF_RGB, 3), "L": (_TJPF_GRAY, 1)}


class _Region(ctypes.Structure):
    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_int), ("w", ctypes.c_int), ("h", ctypes.c_int)]


class _Scaling(ctypes.Structure):
    _fields_ = [("num", ctypes.c_int), ("denom", ctypes.c_int)]


@dataclass(frozen=True)
class Window:
    """A decoded part of a JPEG: ``pixels`` (HWC uint8) start at ``origin`` (row, column) of the image
    decoded at ``1/factor`` scale, which is ``scaled`` (height, width) in full."""

    pixels: np.ndarray
    origin: tuple[int, int]
    scaled: tuple[int, int]


def available() -> bool:
    """Whether a libturbojpeg with the version 3 API was found (see the module docstring)."""
    return _library() is not None


def library_path() -> str | None:
    """The file of the libturbojpeg in use, or None when region decoding is off or unavailable."""
    found = _library()
    return None if found is None else found[1]


def decode_region(
    data: bytes | memoryview,
    mode: str,
    height: int,
    width: int,
    factor: int,
    box: tuple[int, int, int, int],
    fast: bool,
    scratch: np.ndarray | None = None,
) -> Window:
    """Decode the part of a ``height`` x ``width`` JPEG that covers ``box`` at ``1/factor`` scale.

    ``box`` is (top, left, bottom, right) in pixels of the scaled image; it is clipped to the image and
    widened to iMCU columns (plus one on each side, see the module docstring). ``height``/``width`` are
    what the record header promises: a JPEG of another size is refused. ``scratch`` is a flat uint8
    buffer to decode into when it is large enough. Raises :class:`FormatError` when the data does not
    decode, damaged data that libjpeg-turbo would only warn about included.
    """
    found = _library()
    if found is None:
        raise ConfigError("region decoding needs libturbojpeg 3; check stoke.format.fields.jpeg_region.available()")
    lib = found[0]
    handle = _handle(lib)
    pixel_format, channels = _PIXEL_FORMAT[mode]
    encoded = np.frombuffer(data, np.uint8)  # no copy; keeps the bytes alive through the calls
    buffer, size = encoded.ctypes.data, encoded.size
    if lib.tj3DecompressHeader(handle, buffer, size) != 0:
        raise _failure(lib, handle, "the JPEG header does not decode")
    stored = (lib.tj3Get(handle, _TJPARAM_JPEGHEIGHT), lib.tj3Get(handle, _TJPARAM_JPEGWIDTH))
    if stored != (height, width):
        raise FormatError(f"the JPEG is {stored[0]}x{stored[1]}, its record header says {height}x{width}")
    subsampling = lib.tj3Get(handle, _TJPARAM_SUBSAMP)
    if lib.tj3SetScalingFactor(handle, _Scaling(1, factor)) != 0:
        raise _failure(lib, handle, f"libjpeg-turbo cannot decode at 1/{factor} scale")
    scaled = (-(-height // factor), -(-width // factor))
    top, left, bottom, right = box
    top = min(max(top, 0), scaled[0] - 1)
    bottom = min(max(bottom, top + 1), scaled[0])
    if fast and factor == 1 and 0 <= subsampling < len(_MCU_HEIGHT):
        # Fast upsampling at full scale is libjpeg-turbo's merged upsampler. Started mid iMCU row (after
        # skipping scanlines), it emits its first rows from a spare-row buffer it never filled: a few
        # pixels come out of whatever that memory held, differently from run to run (libjpeg-turbo
        # 3.0 beta, the `turbojpeg` wheel's). Starting on an iMCU row's first line avoids it.
        top -= top % _MCU_HEIGHT[subsampling]
    left = min(max(left, 0), scaled[1] - 1)
    right = min(max(right, left + 1), scaled[1])
    if 0 <= subsampling < len(_MCU_WIDTH):
        step = max(1, _MCU_WIDTH[subsampling] // factor)
        left = max(0, left - left % step - step)
        right = min(scaled[1], right + step)
    else:  # unusual sampling: libjpeg-turbo cannot crop it, decode full rows
        left, right = 0, scaled[1]
    region = _Region(left, top, right - left, bottom - top)
    if lib.tj3SetCroppingRegion(handle, region) != 0:
        raise _failure(lib, handle, f"libjpeg-turbo refuses the crop {region.w}x{region.h}")
    if lib.tj3Set(handle, _TJPARAM_FASTDCT, int(fast)) or lib.tj3Set(handle, _TJPARAM_FASTUPSAMPLE, int(fast)):
        raise _failure(lib, handle, "libturbojpeg refuses the decoding settings")
    shape = (bottom - top, right - left, channels)
    need = shape[0] * shape[1] * channels
    if scratch is not None and scratch.size >= need:
        out = scratch[:need].reshape(shape)
    else:
        out = np.empty(shape, np.uint8)
    status = lib.tj3Decompress8(handle, buffer, size, out.ctypes.data, shape[1] * channels, pixel_format)
    if status != 0:
        raise _failure(lib, handle, "the JPEG data is damaged")
    return Window(out, (top, left), scaled)


def _failure(lib: ctypes.CDLL, handle: int, what: str) -> FormatError:
    """The error to raise for a failed call, with libjpeg-turbo's reason; the thread's handle is dropped.

    A failed call can leave a decompressor unusable (libjpeg-turbo 3.0 keeps failing on every later
    header after a damaged one), so the next image starts on a fresh one.
    """
    message = lib.tj3GetErrorStr(handle)
    reason = message.decode("utf-8", "replace") if message else "no reason given"
    _local.handle = None
    return FormatError(f"{what} ({reason})")


class _Handle:
    """One thread's decompressor, destroyed with the thread."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.value = lib.tj3Init(_TJINIT_DECOMPRESS)
        if not self.value:
            raise MemoryError("libturbojpeg could not create a decompressor")
        # Damaged data is an error, as with simplejpeg's strict mode: never a half-grey image.
        lib.tj3Set(self.value, _TJPARAM_STOPONWARNING, 1)

    def __del__(self) -> None:
        if getattr(self, "value", None):
            self.lib.tj3Destroy(self.value)
            self.value = None


_local = threading.local()


def _handle(lib: ctypes.CDLL) -> int:
    handle = getattr(_local, "handle", None)
    if handle is None:
        handle = _local.handle = _Handle(lib)
    return handle.value


@functools.cache
def _library() -> tuple[ctypes.CDLL, str] | None:
    setting = os.environ.get("STOKE_TURBOJPEG", "").strip()
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    candidates = [setting] if setting else [*_system_candidates(), *_wheel_candidates()]
    for path in candidates:
        lib = _load(path)
        if lib is not None:
            return lib, path
    if setting:
        raise ConfigError(
            f"STOKE_TURBOJPEG={setting!r} is not a libturbojpeg with the version 3 API; point it at one, or unset it"
        )
    return None


def _system_candidates() -> list[str]:
    name = ctypes.util.find_library("turbojpeg")
    return [name] if name else []


def _wheel_candidates() -> list[str]:
    try:
        files = importlib.metadata.files("turbojpeg") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    found = []
    for file in files:
        if Path(str(file)).name.startswith("libturbojpeg"):
            found.append(str(file.locate()))
    return found


def _load(path: str) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(path)
        lib.tj3Init.restype = ctypes.c_void_p
    except (OSError, AttributeError):
        return None
    lib.tj3Init.argtypes = [ctypes.c_int]
    lib.tj3Destroy.argtypes = [ctypes.c_void_p]
    lib.tj3Set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.tj3Get.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.tj3DecompressHeader.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    lib.tj3SetScalingFactor.argtypes = [ctypes.c_void_p, _Scaling]
    lib.tj3SetCroppingRegion.argtypes = [ctypes.c_void_p, _Region]
    lib.tj3Decompress8.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
    ]
    lib.tj3GetErrorStr.restype = ctypes.c_char_p
    lib.tj3GetErrorStr.argtypes = [ctypes.c_void_p]
    return lib
