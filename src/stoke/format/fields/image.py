"""The ``image`` field: encoded or raw pixels behind a 12-byte header.

Record layout (little-endian), described with the rest of the format in ``docs/format.md``::

    u8  codec        0 raw, 1 JPEG (libjpeg-turbo), 2 PNG (OpenCV), 3 any format Pillow reads
    u8  orientation  EXIF orientation 1-8 to apply after decoding (always 1 for raw)
    u8  channels     1 (mode "L") or 3 (mode "RGB"): what decoding yields
    u8  reserved     0
    u32 height       height as displayed, after orientation
    u32 width        width as displayed
    ...              payload: the encoded file, or height*width*channels bytes of HWC pixels

The header lets the Loader plan a crop, and the DCT scale to decode it at, before touching the payload.
Settings: ``mode`` (RGB or L), ``encoding`` (``keep`` the source's bytes as they are, re-encode as
``jpeg`` at ``quality``, lossless ``png``, or ``raw`` pixels), ``max_side`` (longest side limit applied at
pack time) and ``max_pixels`` (the decompression-bomb limit). With ``keep``, an image that ``max_side``
shrinks is re-encoded: JPEG sources as JPEG at ``quality``, others as PNG; arrays and Pillow images have
no source bytes and are stored as PNG.

At load time ``max_pixels`` protects the reader, so it is the reader's: ``stoke.open(path, max_pixels=)``
(default :data:`~stoke.format.fields.image_codec.DEFAULT_MAX_PIXELS`) replaces the field with
:meth:`ImageField.limited`, and a dataset's own value can only lower it. A record whose header declares
more pixels is refused before anything is decoded, and so is a payload whose own header (JPEG, PNG,
any Pillow format) declares another size than the record's header.

Example:
    >>> import numpy as np
    >>> field = ImageField(mode="L", encoding="png")
    >>> field.decode(memoryview(field.encode(np.full((2, 3), 7, np.uint8)))).shape
    (2, 3, 1)
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from PIL import Image

import stoke.format.fields.image_codec as codec  # the submodules themselves: not the package that imports this
import stoke.format.fields.jpeg_region as jpeg_region
from stoke.errors import ConfigError, FormatError, InvalidItem
from stoke.format.fields.base import Field, ValueSpec, is_int, require
from stoke.format.fields.ndarray import as_numpy

ENCODINGS = ("keep", "jpeg", "png", "raw")
HEADER = struct.Struct("<BBBBII")


@dataclass(frozen=True)
class ImageHeader:
    """The parsed 12-byte header of one image record."""

    codec: int
    orientation: int
    channels: int
    height: int
    width: int

    @property
    def stored_size(self) -> tuple[int, int]:
        """(height, width) of the payload before orientation is applied."""
        if codec.swaps_axes(self.orientation):
            return self.width, self.height
        return self.height, self.width


@dataclass(frozen=True)
class ImageField(Field):
    """An image decoded to HWC uint8 in ``mode``; see the module docstring for the settings."""

    type_name: ClassVar[str] = "image"
    mode: str = "RGB"
    encoding: str = "keep"
    quality: int = 90
    max_side: int | None = None
    max_pixels: int = codec.DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        if self.mode not in codec.CHANNELS:
            raise ConfigError(f"image mode {self.mode!r} is not one of {sorted(codec.CHANNELS)}")
        if self.encoding not in ENCODINGS:
            raise ConfigError(f"image encoding {self.encoding!r} is not one of {ENCODINGS}")
        if not (is_int(self.quality) and 1 <= self.quality <= 100):
            raise ConfigError(f"JPEG quality {self.quality!r} must be an integer from 1 to 100")
        if self.max_side is not None and not (is_int(self.max_side) and self.max_side >= 1):
            raise ConfigError(f"max_side {self.max_side!r} must be a positive integer")
        if not (is_int(self.max_pixels) and self.max_pixels >= 1):
            raise ConfigError(f"max_pixels {self.max_pixels!r} must be a positive integer")

    @property
    def channels(self) -> int:
        return codec.CHANNELS[self.mode]

    @property
    def spec(self) -> ValueSpec:
        return ValueSpec((None, None, self.channels), np.dtype("u1"))

    # ---- pack time -------------------------------------------------------------------------------
    def encode(self, value: Any) -> bytes:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self._encode_file(bytes(value))
        return self._encode_pixels(self._pixels_of(value), family="png")

    def _encode_file(self, data: bytes) -> bytes:
        found = codec.probe(data, self.mode, self.max_pixels)
        height, width = (
            (found.width, found.height) if codec.swaps_axes(found.orientation) else (found.height, found.width)
        )
        if self.encoding == "keep" and (self.max_side is None or max(height, width) <= self.max_side):
            codec.validate(data, found, self.mode)
            return HEADER.pack(found.codec, found.orientation, self.channels, 0, height, width) + data
        pixels = codec.orient(codec.decode_source(data, found, self.mode), found.orientation)
        return self._encode_pixels(pixels, family=found.format)

    def _encode_pixels(self, pixels: np.ndarray, family: str) -> bytes:
        if self.max_side is not None:
            pixels = codec.shrink_to_fit(pixels, self.max_side)
        height, width = pixels.shape[:2]
        if height * width > self.max_pixels:
            raise InvalidItem(
                "decompression_bomb", f"the image has {height * width:,} pixels, above {self.max_pixels:,}"
            )
        encoding = self.encoding
        if encoding == "keep":
            encoding = "jpeg" if family == "jpeg" else "png"
        if encoding == "raw":
            kind, payload = codec.CODEC_RAW, np.ascontiguousarray(pixels).tobytes()
        elif encoding == "jpeg":
            kind, payload = codec.CODEC_JPEG, codec.encode_jpeg(pixels, self.quality)
        else:
            kind, payload = codec.CODEC_PNG, codec.encode_png(pixels)
        return HEADER.pack(kind, 1, self.channels, 0, height, width) + payload

    def _pixels_of(self, value: Any) -> np.ndarray:
        """Live pixels (Pillow image, HWC numpy array, CHW torch tensor) as HWC uint8 in ``mode``."""
        if isinstance(value, Image.Image):
            orientation = codec.orientation_of(value)
            return codec.orient(codec.pil_to_array(value, self.mode), orientation)
        is_tensor = hasattr(value, "detach")
        array = as_numpy(value)
        if is_tensor and array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[2] not in (1, 3, 4):
            array = array.transpose(1, 2, 0)  # torch's CHW convention
        return codec.array_to_mode(array, self.mode)

    def coerce(self, value: Any) -> np.ndarray:
        if isinstance(value, (bytes, bytearray, memoryview)):
            data = bytes(value)
            found = codec.probe(data, self.mode, self.max_pixels)
            return codec.orient(codec.decode_source(data, found, self.mode), found.orientation)
        return self._pixels_of(value)

    def limited(self, max_pixels: int) -> ImageField:
        """This field with the reader's pixel limit: the smaller of ``max_pixels`` and the dataset's own."""
        if not (is_int(max_pixels) and max_pixels >= 1):
            raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        return dataclasses.replace(self, max_pixels=min(self.max_pixels, max_pixels))

    def record_stats(self, record: bytes) -> dict[str, int]:
        header = self.header(memoryview(record))
        return {
            "min_height": header.height,
            "max_height": header.height,
            "min_width": header.width,
            "max_width": header.width,
        }

    # ---- load time -------------------------------------------------------------------------------
    def header(self, data: memoryview) -> ImageHeader:
        """Parse and validate the record header against this field's settings."""
        if len(data) < HEADER.size:
            raise FormatError(f"an image record of {len(data)} bytes is shorter than its {HEADER.size}-byte header")
        kind, orientation, channels, reserved, height, width = HEADER.unpack_from(data)
        if (
            kind not in codec.CODEC_NAMES
            or not 1 <= orientation <= 8
            or (kind == codec.CODEC_RAW and orientation != 1)
            or channels != self.channels
            or reserved != 0
            or height == 0
            or width == 0
        ):
            raise FormatError(
                f"an image record has a damaged header (codec {kind}, orientation {orientation}, "
                f"{height}x{width}x{channels})"
            )
        if height * width > self.max_pixels:
            raise FormatError(
                f"the image is {height}x{width} = {height * width:,} pixels, above the limit of {self.max_pixels:,} "
                f"(a decompression bomb, or open the dataset with stoke.open(path, max_pixels=N) if it is genuine)"
            )
        return ImageHeader(kind, orientation, channels, height, width)

    def decode_pixels(
        self,
        data: memoryview,
        min_height: int = 0,
        min_width: int = 0,
        scratch: np.ndarray | None = None,
        fast: bool = False,
        header: ImageHeader | None = None,
    ) -> np.ndarray:
        """Displayed HWC pixels, possibly a read-only view; JPEGs may come out DCT-reduced.

        ``min_height``/``min_width`` (displayed) allow a reduced decode no smaller than that; ``scratch``
        is a reusable buffer to decode into and ``fast`` the fast JPEG decode (see
        :func:`image_codec.decode_payload`). ``header`` is this record's already parsed header, if any.
        """
        header = header or self.header(data)
        stored_height, stored_width = header.stored_size
        if codec.swaps_axes(header.orientation):
            min_height, min_width = min_width, min_height
        pixels = codec.decode_payload(
            header.codec,
            data[HEADER.size :],
            self.mode,
            stored_height,
            stored_width,
            min_height,
            min_width,
            scratch,
            fast,
        )
        return codec.orient(pixels, header.orientation)

    def decode_window(
        self,
        data: memoryview,
        header: ImageHeader,
        factor: int,
        box: tuple[int, int, int, int],
        scratch: np.ndarray | None = None,
        fast: bool = False,
    ) -> jpeg_region.Window | None:
        """Displayed pixels covering ``box`` of the image decoded at ``1/factor`` scale, or None.

        Only the part of a JPEG that ``box`` (top, left, bottom, right in displayed pixels at that scale)
        needs is decoded (:mod:`~stoke.format.fields.jpeg_region`); the window's ``origin`` and ``scaled``
        size are displayed coordinates too. None when the record is not a JPEG stoke decodes itself or no
        libturbojpeg 3 is available: then use :meth:`decode_pixels`, which gives the same pixels.
        """
        if header.codec != codec.CODEC_JPEG or not jpeg_region.available():
            return None
        stored_height, stored_width = header.stored_size
        scaled = (-(-stored_height // factor), -(-stored_width // factor))
        window = jpeg_region.decode_region(
            data[HEADER.size :],
            self.mode,
            stored_height,
            stored_width,
            factor,
            codec.stored_box(header.orientation, *scaled, box),
            fast,
            scratch,
        )
        rows, columns = window.pixels.shape[:2]
        top, left = window.origin
        shown = codec.displayed_box(header.orientation, *scaled, (top, left, top + rows, left + columns))
        size = (scaled[1], scaled[0]) if codec.swaps_axes(header.orientation) else scaled
        return jpeg_region.Window(codec.orient(window.pixels, header.orientation), shown[:2], size)

    def decode(self, data: memoryview) -> np.ndarray:
        return np.array(self.decode_pixels(data), copy=True, order="C")

    # ---- manifest --------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "encoding": self.encoding,
            "quality": self.quality,
            "max_side": self.max_side,
            "max_pixels": self.max_pixels,
        }

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> ImageField:
        known = {"mode", "encoding", "quality", "max_side", "max_pixels"}
        require(set(params) <= known, where, f"has unknown settings {sorted(set(params) - known)}")
        try:
            return cls(**params)
        except (TypeError, ValueError) as error:
            raise FormatError(f"{where} has invalid image settings: {error}") from None
