"""The image field: every input kind decodes to the declared mode, bad inputs get their reason code."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from helpers import encode, photo
from stoke.errors import FormatError, InvalidItem
from stoke.format.fields import ImageField
from stoke.format.fields import image_codec as codec
from stoke.format.fields.image import HEADER


def stored(field: ImageField, value) -> tuple[int, np.ndarray]:
    record = field.encode(value)
    return record[0], field.decode(memoryview(record))


def pil_reference(data: bytes, mode: str) -> np.ndarray:
    """What users' PIL loaders produce: open, apply EXIF orientation, convert."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    array = np.asarray(image.convert(mode))
    return array[:, :, None] if array.ndim == 2 else array


def test_jpeg_is_kept_byte_for_byte_and_decodes_like_pillow():
    data = encode(photo(37, 51), quality=90)
    record = ImageField().encode(data)
    assert record[HEADER.size :] == data
    assert record[0] == codec.CODEC_JPEG
    decoded = ImageField().decode(memoryview(record))
    assert decoded.shape == (37, 51, 3)
    assert np.abs(decoded.astype(int) - pil_reference(data, "RGB")).max() <= 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillows_exif_transpose(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(photo(20, 32, seed=orientation), quality=95, exif=exif.tobytes())
    for encoding in ("keep", "raw", "png"):
        field = ImageField(encoding=encoding)
        record = field.encode(data)
        header = field.header(memoryview(record))
        decoded = field.decode(memoryview(record))
        reference = pil_reference(data, "RGB")
        assert decoded.shape == reference.shape == (header.height, header.width, 3)
        assert np.abs(decoded.astype(int) - reference).max() <= 1, (encoding, orientation)


@pytest.mark.parametrize(
    "make, mode, expected_codec",
    [
        (lambda: encode(photo(16, 20)[:, :, 0], "PNG"), "L", codec.CODEC_PNG),
        (lambda: encode(photo(16, 20), "PNG"), "RGB", codec.CODEC_PNG),
        (lambda: encode(photo(16, 20)[:, :, 0], "PNG"), "RGB", codec.CODEC_PILLOW),
        (lambda: encode(photo(16, 20)[:, :, 0], "JPEG"), "RGB", codec.CODEC_JPEG),
        (lambda: _save(Image.fromarray(photo(16, 20)).convert("CMYK"), "JPEG"), "RGB", codec.CODEC_PILLOW),
        (lambda: _save(Image.fromarray(photo(16, 20)).convert("P"), "PNG"), "RGB", codec.CODEC_PILLOW),
        (lambda: _save(Image.fromarray(photo(16, 20)).convert("RGBA"), "PNG"), "RGB", codec.CODEC_PILLOW),
        (lambda: _save(Image.fromarray(photo(16, 20)), "BMP"), "RGB", codec.CODEC_PILLOW),
        (lambda: _save(Image.fromarray(photo(16, 20)), "WEBP", lossless=True), "RGB", codec.CODEC_PILLOW),
    ],
)
def test_every_format_and_mode_converts_to_the_declared_mode(make, mode, expected_codec):
    data = make()
    kind, decoded = stored(ImageField(mode=mode), data)
    assert kind == expected_codec
    assert decoded.shape == (16, 20, 1 if mode == "L" else 3)
    tolerance = 1 if expected_codec == codec.CODEC_JPEG else 0
    assert np.abs(decoded.astype(int) - pil_reference(data, mode)).max() <= tolerance


def test_sixteen_bit_png_is_scaled_not_clipped():
    wide = (np.arange(16 * 20, dtype=np.uint16).reshape(16, 20) * 200).astype(np.uint16)
    image = Image.fromarray(wide)
    assert image.mode.startswith("I;16")
    _, decoded = stored(ImageField(mode="L"), _save(image, "PNG"))
    np.testing.assert_array_equal(decoded[:, :, 0], (wide >> 8).astype(np.uint8))


def test_png_named_jpg_is_not_an_error():
    data = encode(photo(10, 12), "PNG")  # the name is not the format: bytes are sniffed
    kind, decoded = stored(ImageField(), data)
    assert kind == codec.CODEC_PNG
    np.testing.assert_array_equal(decoded, photo(10, 12))


@pytest.mark.parametrize("encoding", ["jpeg", "png", "raw"])
def test_reencoding_and_max_side(encoding):
    data = encode(photo(240, 360), quality=95)
    field = ImageField(encoding=encoding, quality=85, max_side=120)
    record = field.encode(data)
    header = field.header(memoryview(record))
    assert (header.height, header.width) == (80, 120)
    assert header.codec == {"jpeg": codec.CODEC_JPEG, "png": codec.CODEC_PNG, "raw": codec.CODEC_RAW}[encoding]
    if encoding == "raw":
        assert len(record) == HEADER.size + 80 * 120 * 3
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((120, 80), Image.BOX))
    error = np.abs(field.decode(memoryview(record)).astype(int) - reference).mean()
    assert error < (4 if encoding == "jpeg" else 1.5)  # area vs box resampling; JPEG adds its own loss


def test_keep_reencodes_only_images_that_max_side_shrinks():
    small, large = encode(photo(20, 20), quality=90), encode(photo(80, 40), "PNG")
    field = ImageField(encoding="keep", max_side=40)
    assert field.encode(small)[HEADER.size :] == small
    record = field.encode(large)
    assert record[0] == codec.CODEC_PNG and field.header(memoryview(record)).height == 40


def test_live_values_pillow_arrays_and_chw_tensors():
    import torch

    pixels = photo(12, 14)
    field = ImageField()
    np.testing.assert_array_equal(field.coerce(Image.fromarray(pixels)), pixels)
    np.testing.assert_array_equal(field.coerce(pixels), pixels)
    np.testing.assert_array_equal(field.coerce(torch.from_numpy(pixels).permute(2, 0, 1)), pixels)
    np.testing.assert_array_equal(stored(field, pixels)[1], pixels)  # arrays are stored losslessly
    with pytest.raises(InvalidItem, match=r"uint8"):
        field.encode(pixels.astype(np.float32))


def _png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims a size, with a tiny (invalid) body: a decompression-bomb header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return codec.PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty"),
        (b"this is a text file named photo.jpg\n", "not_an_image"),
        (encode(photo(64, 64), quality=90)[:900], "truncated"),
        (encode(photo(64, 64), "PNG")[:300], "truncated"),
        (_png_with_size(100_000, 100_000), "decompression_bomb"),
        (encode(photo(64, 64), quality=90)[:200] + bytes(range(256)) * 8, "undecodable"),
    ],
)
def test_bad_inputs_get_their_reason_code(data, code):
    with pytest.raises(InvalidItem) as caught:
        ImageField().encode(data)
    assert caught.value.code == code
    assert str(caught.value)


def test_max_pixels_is_the_bomb_limit():
    data = encode(photo(40, 40), quality=90)
    with pytest.raises(InvalidItem) as caught:
        ImageField(max_pixels=1000).encode(data)
    assert caught.value.code == "decompression_bomb" and "1,600" in str(caught.value)


def test_damaged_records_are_format_errors():
    field = ImageField()
    record = bytearray(field.encode(encode(photo(20, 20), quality=90)))
    with pytest.raises(FormatError, match=r"shorter"):
        field.decode(memoryview(bytes(record[:5])))
    bad_codec = bytes([9]) + bytes(record[1:])
    with pytest.raises(FormatError, match=r"damaged header"):
        field.decode(memoryview(bad_codec))
    wrong_channels = bytes(record[:2]) + bytes([1]) + bytes(record[3:])
    with pytest.raises(FormatError, match=r"damaged header"):
        field.decode(memoryview(wrong_channels))
    truncated_payload = bytes(record[: HEADER.size + 100])
    with pytest.raises(FormatError, match=r"does not decode"):
        field.decode(memoryview(truncated_payload))


def test_dct_reduced_decode_is_no_smaller_than_asked():
    field = ImageField()
    record = memoryview(field.encode(encode(photo(200, 320), quality=90)))
    reduced = field.decode_pixels(record, min_height=50, min_width=60)
    assert 50 <= reduced.shape[0] < 200 and 60 <= reduced.shape[1] < 320
    assert field.decode_pixels(record).shape == (200, 320, 3)


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
