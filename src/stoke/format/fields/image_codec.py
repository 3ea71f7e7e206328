"""Pixels in and out of encoded images, for the ``image`` field.

Each library does what it is best at: libjpeg-turbo through ``simplejpeg`` for JPEG (GIL released,
DCT-domain downscaling, strict about damaged data), OpenCV for 8-bit PNG decoding and for resizing (GIL
released), Pillow for every other format and for mode conversions (palette, CMYK, 16-bit, alpha).

Pack time calls :func:`probe` (header only: format, size, EXIF orientation, decompression-bomb check)
and then validates or decodes; load time calls :func:`decode_payload` with the codec chosen at pack time,
so no image is sniffed twice. Every pack-time failure is an :class:`~stoke.errors.InvalidItem` whose
``code`` is one of ``empty``, ``not_an_image``, ``truncated``, ``undecodable``, ``decompression_bomb``.

Example:
    >>> import numpy as np
    >>> data = encode_png(np.zeros((4, 6, 3), np.uint8))
    >>> found = probe(data, "RGB", max_pixels=1000)
    >>> (found.format, found.height, found.width, found.codec == CODEC_PNG)
    ('png', 4, 6, True)
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from stoke.errors import FormatError, InvalidItem

CODEC_RAW, CODEC_JPEG, CODEC_PNG, CODEC_PILLOW = 0, 1, 2, 3
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_JPEG: "jpeg", CODEC_PNG: "png", CODEC_PILLOW: "pillow"}
CHANNELS = {"RGB": 3, "L": 1}
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION_TAG = 0x0112
# Pillow's own default limit, so that stoke and the users' PIL-based loaders agree on what is a bomb.
DEFAULT_MAX_PIXELS = 89_478_485

_JPEG_COLORSPACE = {"RGB": "RGB", "L": "GRAY"}
_FAST_JPEG_SOURCES = {"YCbCr", "RGB", "Gray"}  # CMYK and YCCK go through Pillow, which matches its users


@dataclass(frozen=True)
class Probe:
    """What an encoded image's header says: format, stored size, EXIF orientation, codec to decode it."""

    format: str
    height: int
    width: int
    orientation: int
    codec: int


def probe(data: bytes, mode: str, max_pixels: int) -> Probe:
    """Identify ``data`` from its header alone; raises :class:`InvalidItem` for what cannot be packed."""
    if len(data) == 0:
        raise InvalidItem("empty", "the file is empty (0 bytes)")
    if data.startswith(JPEG_MAGIC):
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            pass  # an unusual JPEG: let Pillow have its say below
        else:
            _check_pixels(height, width, max_pixels)
            codec = CODEC_JPEG if colorspace in _FAST_JPEG_SOURCES else CODEC_PILLOW
            return Probe("jpeg", height, width, exif_orientation(data), codec)
    image = _open_with_pillow(data)
    width, height = image.size
    _check_pixels(height, width, max_pixels)
    fmt = (image.format or "unknown").lower()
    codec = CODEC_PNG if fmt == "png" and _png_is_plain(data, mode) else CODEC_PILLOW
    return Probe(fmt, height, width, orientation_of(image), codec)


def validate(data: bytes, found: Probe, mode: str) -> None:
    """Check that every byte of ``data`` decodes; raises :class:`InvalidItem` ``truncated``/``undecodable``.

    JPEGs are entropy-decoded in full at 1/8 scale: damage anywhere in the data still fails, at a fraction
    of the cost of a full decode.
    """
    if found.codec == CODEC_JPEG:
        try:
            simplejpeg.decode_jpeg(data, colorspace=_JPEG_COLORSPACE[mode], min_height=1, min_width=1)
        except ValueError as error:
            raise _decode_failure(error, "JPEG") from None
    else:
        decode_source(data, found, mode)


def decode_source(data: bytes, found: Probe, mode: str) -> np.ndarray:
    """Decode a source image in full, in stored orientation, as HWC uint8 in ``mode``; raises InvalidItem."""
    if found.codec == CODEC_JPEG:
        try:
            return simplejpeg.decode_jpeg(data, colorspace=_JPEG_COLORSPACE[mode])
        except ValueError as error:
            raise _decode_failure(error, "JPEG") from None
    image = _open_with_pillow(data)
    try:
        image.load()
    except Exception as error:
        raise _decode_failure(error, found.format.upper()) from None
    return pil_to_array(image, mode)


def decode_payload(
    codec: int,
    payload: memoryview,
    mode: str,
    height: int,
    width: int,
    min_height: int = 0,
    min_width: int = 0,
    scratch: np.ndarray | None = None,
    fast: bool = False,
) -> np.ndarray:
    """Decode a stored payload (stored orientation, ``height`` x ``width``) as HWC uint8.

    ``min_height``/``min_width`` let a JPEG decode at a DCT-domain reduced scale that is still at least
    that large; other codecs ignore them. A JPEG decodes into ``scratch`` (a flat uint8 array of at least
    ``height * width * channels`` bytes) when one is given, so a thread reuses one buffer instead of
    allocating per image; the result is then a view of it. ``fast`` selects libjpeg-turbo's fast integer
    inverse DCT and nearest-neighbour chroma upsampling: about 12% less work, within a grey level or two
    of the accurate decode on photographs. Raises :class:`FormatError` when the bytes do not decode.

    The payload's own header must declare exactly ``height`` x ``width``, and that is checked before any
    decoder allocates: the caller has checked that size against its pixel limit, and a payload that
    claims more (a decompression bomb behind a harmless record header) is refused unread.
    """
    channels = CHANNELS[mode]
    if codec == CODEC_RAW:
        if len(payload) != height * width * channels:
            raise FormatError(f"a raw image holds {len(payload)} bytes instead of {height * width * channels}")
        return np.frombuffer(payload, np.uint8).reshape(height, width, channels)
    if codec not in CODEC_NAMES:
        raise FormatError(f"an image record names codec {codec}, which this stoke does not know")
    try:
        image = Image.open(io.BytesIO(payload)) if codec == CODEC_PILLOW else None  # reads the header only
        declared = (image.size[1], image.size[0]) if image is not None else declared_size(codec, payload)
        if declared != (height, width):
            raise FormatError(
                f"the image data declares {declared[0]}x{declared[1]} pixels where its record header says "
                f"{height}x{width}"
            )
        if codec == CODEC_JPEG:
            big_enough = scratch is not None and scratch.size >= height * width * channels
            array = simplejpeg.decode_jpeg(
                payload,
                colorspace=_JPEG_COLORSPACE[mode],
                min_height=min_height,
                min_width=min_width,
                buffer=scratch if big_enough else None,
                fastdct=fast,
                fastupsample=fast,
            )
        elif codec == CODEC_PNG:
            flags = (cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE) | cv2.IMREAD_IGNORE_ORIENTATION
            array = cv2.imdecode(np.frombuffer(payload, np.uint8), flags)
            if array is None:
                raise FormatError("the image does not decode (OpenCV could not decode the PNG)")
            array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB) if channels == 3 else array[:, :, None]
        else:
            assert image is not None
            image.load()
            array = pil_to_array(image, mode)
    except FormatError:
        raise
    except Exception as error:
        raise FormatError(f"the image does not decode ({error})") from None
    if array.shape[2] != channels or array.shape[0] > height or array.shape[1] > width:
        raise FormatError(f"the image decodes to {array.shape}, its header says {height}x{width}x{channels}")
    if min_height <= 0 and (array.shape[0], array.shape[1]) != (height, width):
        raise FormatError(f"the image decodes to {array.shape[:2]}, its header says {height}x{width}")
    return array


def declared_size(codec: int, payload: memoryview) -> tuple[int, int]:
    """(height, width) that a JPEG or PNG payload's own header declares, read without decoding a pixel.

    Any decoder of a payload (the GPU's too) must compare it with the record header's stored size before
    it decodes, because decoders allocate from the payload's header.

    >>> declared_size(CODEC_PNG, memoryview(encode_png(np.zeros((4, 6, 3), np.uint8))))
    (4, 6)
    """
    if codec == CODEC_JPEG:
        height, width, _, _ = simplejpeg.decode_jpeg_header(payload)
        return height, width
    if len(payload) < 24 or bytes(payload[:8]) != PNG_MAGIC or bytes(payload[12:16]) != b"IHDR":
        raise FormatError("the PNG data has no valid header")
    width, height = struct.unpack_from(">II", payload, 16)
    return height, width


def pil_to_array(image: Image.Image, mode: str) -> np.ndarray:
    """A Pillow image as HWC uint8 in ``mode``: 16-bit scaled to 8, palettes expanded, alpha dropped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(image).astype(np.int64)
        image = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    elif image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != mode:
        image = image.convert(mode)
    array = np.asarray(image)
    return array[:, :, None] if array.ndim == 2 else array


def array_to_mode(array: np.ndarray, mode: str) -> np.ndarray:
    """An HW, HW1, HW3 or HW4 uint8 array as HWC uint8 in ``mode`` (Pillow's conversion formulas)."""
    if array.dtype != np.uint8:
        raise InvalidItem("invalid_value", f"an image array must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        source = "L"
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        source = "RGB" if array.shape[2] == 3 else "RGBA"
    else:
        raise InvalidItem("invalid_value", f"an image array must be HxW or HxWxC with C in 1, 3, 4; got {array.shape}")
    if source == mode:
        return array[:, :, None] if array.ndim == 2 else array
    return pil_to_array(Image.fromarray(np.ascontiguousarray(array), source), mode)


def orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an HWC array, as a view; matches ``PIL.ImageOps.exif_transpose``."""
    if orientation in (1, 0):
        return array
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.transpose(1, 0, 2)
    if orientation == 6:
        return array.transpose(1, 0, 2)[:, ::-1]
    if orientation == 7:
        return array[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return array.transpose(1, 0, 2)[::-1]
    raise FormatError(f"EXIF orientation {orientation} is not between 1 and 8")


def stored_box(orientation: int, height: int, width: int, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The (top, left, bottom, right) box of the stored ``height`` x ``width`` pixels that :func:`orient`
    turns into ``box`` of the displayed image.

    >>> stored_box(6, 4, 6, (0, 0, 2, 1))  # rotated 90 degrees: the displayed top-left is stored bottom-left
    (3, 0, 4, 2)
    """
    top, left, bottom, right = box
    return _box(_to_stored, orientation, height, width, (top, left), (bottom, right))


def displayed_box(
    orientation: int, height: int, width: int, box: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """The inverse of :func:`stored_box`: where ``box`` of the stored pixels lands in the displayed image.

    >>> displayed_box(6, 4, 6, stored_box(6, 4, 6, (1, 2, 3, 4)))
    (1, 2, 3, 4)
    """
    top, left, bottom, right = box
    return _box(_to_displayed, orientation, height, width, (top, left), (bottom, right))


def _box(
    transform: Callable[[int, int, int, int, int], tuple[int, int]],
    orientation: int,
    height: int,
    width: int,
    corner: tuple[int, int],
    other: tuple[int, int],
) -> tuple[int, int, int, int]:
    y0, x0 = transform(orientation, height, width, *corner)
    y1, x1 = transform(orientation, height, width, *other)
    return min(y0, y1), min(x0, x1), max(y0, y1), max(x0, x1)


def _to_stored(orientation: int, height: int, width: int, y: int, x: int) -> tuple[int, int]:
    """A displayed edge coordinate as a stored one; ``height``/``width`` are the stored size."""
    return {
        1: (y, x),
        2: (y, width - x),
        3: (height - y, width - x),
        4: (height - y, x),
        5: (x, y),
        6: (height - x, y),
        7: (height - x, width - y),
        8: (x, width - y),
    }[orientation]


def _to_displayed(orientation: int, height: int, width: int, y: int, x: int) -> tuple[int, int]:
    """A stored edge coordinate as a displayed one; ``height``/``width`` are the stored size."""
    return {
        1: (y, x),
        2: (y, width - x),
        3: (height - y, width - x),
        4: (height - y, x),
        5: (x, y),
        6: (x, height - y),
        7: (width - x, height - y),
        8: (width - x, y),
    }[orientation]


def swaps_axes(orientation: int) -> bool:
    """Whether an EXIF orientation exchanges height and width."""
    return orientation in (5, 6, 7, 8)


def shrink_to_fit(array: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale so the longest side is at most ``max_side`` (area interpolation); never upscales."""
    height, width = array.shape[:2]
    longest = max(height, width)
    if longest <= max_side:
        return array
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = cv2.resize(np.ascontiguousarray(array), size, interpolation=cv2.INTER_AREA)
    return resized[:, :, None] if resized.ndim == 2 else resized


def encode_jpeg(array: np.ndarray, quality: int) -> bytes:
    """HWC uint8 (1 or 3 channels) to baseline JPEG; colour uses 4:2:0 subsampling."""
    gray = array.shape[2] == 1
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(array),
        quality=quality,
        colorspace="GRAY" if gray else "RGB",
        colorsubsampling="Gray" if gray else "420",
    )


def encode_png(array: np.ndarray) -> bytes:
    """HWC uint8 (1 or 3 channels) to PNG (lossless)."""
    if array.shape[2] == 3:
        array = cv2.cvtColor(np.ascontiguousarray(array), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, 6])
    if not ok:
        raise InvalidItem("undecodable", "OpenCV could not encode the image as PNG")
    return encoded.tobytes()


def exif_orientation(data: bytes) -> int:
    """The EXIF orientation stored in an encoded image (1 when absent or unreadable)."""
    try:
        return orientation_of(Image.open(io.BytesIO(data)))
    except Exception:
        return 1


def orientation_of(image: Image.Image) -> int:
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _open_with_pillow(data: bytes) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as error:
            raise InvalidItem("decompression_bomb", f"Pillow refuses it as a decompression bomb ({error})") from None
        except UnidentifiedImageError:
            for magic, name in ((JPEG_MAGIC, "JPEG"), (PNG_MAGIC, "PNG")):
                if data.startswith(magic):  # an image whose header is damaged, whatever Pillow's version says
                    raise InvalidItem("undecodable", f"the {name} header is damaged") from None
            raise InvalidItem(
                "not_an_image",
                "the file is not in any image format stoke reads (a misnamed or non-image file?)",
            ) from None
        except Exception as error:
            raise _decode_failure(error, "image") from None


def _check_pixels(height: int, width: int, max_pixels: int) -> None:
    if height <= 0 or width <= 0:
        raise InvalidItem("undecodable", f"the image header declares an empty size {width}x{height}")
    if height * width > max_pixels:
        raise InvalidItem(
            "decompression_bomb",
            f"the image header declares {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (a decompression bomb, or raise --max-pixels if the image is genuine)",
        )


def _png_is_plain(data: bytes, mode: str) -> bool:
    """8-bit grayscale or RGB PNG in the target mode: OpenCV decodes it to exactly Pillow's pixels."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        return False
    bit_depth, color_type = data[24], data[25]
    return bit_depth == 8 and ((color_type == 0 and mode == "L") or (color_type == 2 and mode == "RGB"))


def _decode_failure(error: BaseException, what: str) -> InvalidItem:
    message = str(error) or type(error).__name__
    lowered = message.lower()
    if "premature end" in lowered or "truncated" in lowered or "unexpected end" in lowered:
        return InvalidItem("truncated", f"the {what} data ends early ({message}); the file is truncated")
    return InvalidItem("undecodable", f"the {what} data is damaged ({message})")
