"""The form a stage gets one field's values in: stored records, or the live values of a user's dataset.

A reader (``stoke.pipeline.reader``) hands a stage one small input per field, made once when the stage is
built and called once per value, so a stage has one code path whatever the values came from:

* :class:`StoredImages` and :class:`LiveImages` (:class:`ImageInput`): ``open`` gives the displayed size
  before any pixel is decoded, from a stored record's 12-byte header, or from a live image (a Pillow
  image, an array, encoded bytes) coerced once to HWC uint8; ``pixels`` then gives the pixels the planned
  geometry needs. A stored JPEG decodes at the smallest DCT scale that covers the crop at the output size
  (``stoke.ops.geometry.decode_factor``), and only the part of it the crop reads
  (``stoke.format.fields.jpeg_region``), into a per-thread buffer as large as the largest stored image; a
  live image is already pixels.
* :class:`StoredValues` and :class:`LiveValues` (:class:`ValueInput`): ``decode`` turns a value into what
  the batch holds: a stored record decoded by its field (an array as a zero-copy view of the shard,
  copied once, into the batch), a live value coerced by its field.

Not for: reading samples (the readers), nor rendering pixels into the batch (``stoke.pipeline.image``).

Example:
    >>> import numpy as np
    >>> from stoke.format.fields import ImageField
    >>> from stoke.ops.base import Geometry
    >>> stored, live = StoredImages(ImageField(), None), LiveImages(ImageField())
    >>> image = np.full((6, 8, 3), 7, np.uint8)
    >>> record = memoryview(ImageField(encoding="raw").encode(image))
    >>> height, width, header = stored.open(record)
    >>> pixels, origin, decoded = stored.pixels(record, header, Geometry.identity(height, width), True, True)
    >>> (height, width), pixels.shape, bool((pixels == 7).all()), live.open(image)[:2]
    ((6, 8), (6, 8, 3), True, (6, 8))
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from stoke.format.fields import Field, ImageField, NDArrayField
from stoke.format.fields.image import ImageHeader
from stoke.ops.base import Geometry
from stoke.ops.geometry import crop_box, decode_factor

# (pixels, origin, decoded): HWC uint8 pixels that start at ``origin`` (row, column) of the image as
# decoded, whose whole (height, width) is ``decoded`` (None: the pixels are the whole decoded image).
Pixels = tuple[np.ndarray, tuple[int, int], tuple[int, int] | None]

_ORIGIN = (0, 0)


@runtime_checkable
class ImageInput(Protocol):
    """How an image stage gets at an image field's values, whatever the reader read them from.

    Per value, two calls: ``open`` before the geometry is planned, ``pixels`` after. The pixels hold every
    pixel of the geometry's source box that lies inside the image (past the edges the stage pads with
    zeros), possibly from an image decoded at a reduced scale: the stage crops at ``decoded`` size.

    Example:
        >>> import numpy as np
        >>> from stoke.format.fields import ImageField
        >>> from stoke.ops.base import Geometry
        >>> images: ImageInput = LiveImages(ImageField(mode="L"))
        >>> height, width, handle = images.open(np.zeros((4, 6, 1), np.uint8))
        >>> pixels, origin, decoded = images.pixels(handle, handle, Geometry.identity(4, 6), True, True)
        >>> pixels.shape, origin, decoded
        ((4, 6, 1), (0, 0), None)
    """

    field: ImageField

    def open(self, value: Any) -> tuple[int, int, Any]:
        """(height, width, handle): the displayed size of ``value``, and what :meth:`pixels` takes back."""
        ...

    def pixels(self, value: Any, handle: Any, geometry: Geometry, fast: bool, region: bool) -> Pixels:
        """The pixels ``geometry`` resamples (see :data:`Pixels`); ``fast`` asks for the fast JPEG decode and
        ``region`` lets a JPEG decode only the part the geometry reads (the same pixels either way)."""
        ...


@runtime_checkable
class ValueInput(Protocol):
    """How a value stage turns a non-image field's values into what its batch holds.

    Example:
        >>> from stoke.format.fields import FloatField
        >>> values: ValueInput = LiveValues(FloatField())
        >>> values.decode(2)
        2.0
    """

    field: Field
    decode: Callable[[Any], Any]


class StoredImages:
    """An image field's stored records: the header first, then only what the crop needs, decoded.

    ``stats`` (the field's manifest statistics) size the per-thread decode buffer: the largest stored
    image, never above the field's pixel limit; without them every decode allocates.
    """

    def __init__(self, field: ImageField, stats: dict[str, int] | None) -> None:
        self.field = field
        largest = min(stats["max_height"] * stats["max_width"], field.max_pixels) if stats else 0
        self._scratch_bytes = largest * field.channels
        self._local = threading.local()

    def open(self, value: memoryview) -> tuple[int, int, ImageHeader]:
        header = self.field.header(value)
        return header.height, header.width, header

    def pixels(self, value: memoryview, handle: ImageHeader, geometry: Geometry, fast: bool, region: bool) -> Pixels:
        height, width = handle.height, handle.width
        factor = decode_factor(height, width, geometry)
        if region:
            scaled = (-(-height // factor), -(-width // factor))
            box = crop_box(geometry, height, width, scaled)
            window = self.field.decode_window(value, handle, factor, box, self._scratch(), fast)
            if window is not None:
                return window.pixels, window.origin, window.scaled
        min_height, min_width = (0, 0) if factor == 1 else (-(-height // factor), -(-width // factor))
        pixels = self.field.decode_pixels(value, min_height, min_width, self._scratch(), fast, header=handle)
        return pixels, _ORIGIN, None

    def _scratch(self) -> np.ndarray | None:
        if not self._scratch_bytes:
            return None
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = np.empty(self._scratch_bytes, np.uint8)
        return scratch


class LiveImages:
    """An image field's live values (Pillow images, arrays, encoded bytes), coerced once to HWC uint8."""

    def __init__(self, field: ImageField) -> None:
        self.field = field

    def open(self, value: Any) -> tuple[int, int, np.ndarray]:
        pixels = self.field.coerce(value)
        return pixels.shape[0], pixels.shape[1], pixels

    def pixels(self, value: Any, handle: np.ndarray, geometry: Geometry, fast: bool, region: bool) -> Pixels:
        return handle, _ORIGIN, None


class StoredValues:
    """A non-image field's stored records, decoded by the field (an array as a view of the mapped shard)."""

    def __init__(self, field: Field) -> None:
        self.field = field
        # A bound method, so that decoding a value costs one call, as it did before there was an input.
        self.decode: Callable[[Any], Any] = field.decode_view if isinstance(field, NDArrayField) else field.decode


class LiveValues:
    """A non-image field's live values, coerced by the field (``int`` of an int field, and so on)."""

    def __init__(self, field: Field) -> None:
        self.field = field
        self.decode: Callable[[Any], Any] = field.coerce


def stored_input(field: Field, stats: dict[str, int] | None) -> StoredImages | StoredValues:
    """The input for a field's stored records (``stats``: its manifest statistics, for images)."""
    return StoredImages(field, stats) if isinstance(field, ImageField) else StoredValues(field)


def live_input(field: Field) -> LiveImages | LiveValues:
    """The input for a field's live values."""
    return LiveImages(field) if isinstance(field, ImageField) else LiveValues(field)
