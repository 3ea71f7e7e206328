"""Field encodings: every type round-trips, bad values are refused, manifest settings are validated."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from stoke.errors import FormatError, InvalidItem
from stoke.format.fields import (
    BytesField,
    FloatField,
    ImageField,
    IntField,
    JsonField,
    NDArrayField,
    TextField,
    field_from_dict,
)

NUMERIC_DTYPES = st.sampled_from(
    [
        "bool",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "float16",
        "float32",
        "float64",
        "complex64",
        "complex128",
        ">i4",
        ">f8",
    ]
)


def roundtrip(field, value):
    return field.decode(memoryview(field.encode(value)))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_int_roundtrip(value):
    assert roundtrip(IntField(), value) == value


def test_int_refuses_what_it_cannot_hold():
    field = IntField()
    assert roundtrip(field, np.int16(-3)) == -3
    assert roundtrip(field, True) == 1
    assert roundtrip(field, 4.0) == 4
    for bad in (2**63, 3.5, "7", None):
        with pytest.raises(InvalidItem) as caught:
            field.encode(bad)
        assert caught.value.code == "invalid_value"


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float_roundtrip(value):
    decoded = roundtrip(FloatField(), value)
    assert (math.isnan(value) and math.isnan(decoded)) or decoded == value


@settings(max_examples=150)
@given(
    dtype=NUMERIC_DTYPES,
    shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    variable=st.booleans(),
    data=st.data(),
)
def test_ndarray_roundtrip_any_dtype_and_shape(dtype, shape, variable, data):
    array = data.draw(hnp.arrays(np.dtype(dtype), shape))
    declared = tuple(None for _ in shape) if variable else shape
    field = NDArrayField(dtype, declared)
    decoded = roundtrip(field, array)
    assert decoded.shape == array.shape
    assert decoded.dtype == np.dtype(dtype).newbyteorder("<")
    np.testing.assert_array_equal(decoded, array)
    assert decoded.flags.writeable


def test_ndarray_any_shape_and_fixed_shape_checks():
    anything = NDArrayField("float32", None)
    assert roundtrip(anything, np.ones((2, 3, 4))).shape == (2, 3, 4)
    fixed = NDArrayField("float32", (3,))
    assert len(fixed.encode(np.ones(3))) == 12  # fixed shapes store bare elements
    with pytest.raises(InvalidItem, match=r"expected shape"):
        fixed.encode(np.ones(4))
    with pytest.raises(InvalidItem, match=r"do not fit"):
        NDArrayField("uint8", None).encode(np.array([300]))
    with pytest.raises(InvalidItem, match=r"expected dtype"):
        NDArrayField("int32", None).encode(np.array([1.5]))
    for unsupported in (object, "U4", np.longdouble, [("a", "i4")]):
        with pytest.raises(ValueError, match=r"is not one stoke stores"):
            NDArrayField(unsupported)


def test_ndarray_decode_rejects_damaged_records():
    field = NDArrayField("int32", (None,))
    record = bytearray(field.encode(np.arange(4, dtype=np.int32)))
    record[8] = 9  # claims 9 elements but holds 4
    with pytest.raises(FormatError, match=r"needs"):
        field.decode(memoryview(bytes(record)))
    with pytest.raises(FormatError):
        field.decode(memoryview(b"\x01"))


@given(st.binary(max_size=300))
def test_bytes_roundtrip(value):
    assert roundtrip(BytesField(), value) == value


@given(st.text(max_size=200))
def test_text_roundtrip(value):
    assert roundtrip(TextField(), value) == value


def test_text_refuses_lone_surrogates_and_non_strings():
    with pytest.raises(InvalidItem, match=r"not valid Unicode"):
        TextField().encode("a\ud800b")
    with pytest.raises(InvalidItem):
        TextField().encode(b"bytes")
    with pytest.raises(FormatError, match=r"UTF-8"):
        TextField().decode(memoryview(b"\xff\xfe"))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
def test_json_roundtrip(value):
    assert roundtrip(JsonField(), value) == json.loads(json.dumps(value))


def test_json_refuses_nan_and_objects():
    with pytest.raises(InvalidItem):
        JsonField().encode({"x": float("nan")})
    with pytest.raises(InvalidItem):
        JsonField().encode({"x": object()})


@pytest.mark.parametrize(
    "field",
    [
        IntField(),
        FloatField(),
        BytesField(),
        TextField(),
        JsonField(),
        NDArrayField(">f4", (2, None)),
        ImageField(mode="L", encoding="raw", quality=75, max_side=64, max_pixels=1000),
    ],
)
def test_settings_roundtrip_through_the_manifest(field):
    assert field_from_dict(json.loads(json.dumps(field.to_dict())), where="fields[0]") == field


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"type": "tensor"}, "does not know"),
        ({"type": "int", "bits": 32}, "does not take"),
        ({"type": "ndarray", "dtype": "|O8", "shape": None}, "invalid dtype"),
        ({"type": "ndarray", "dtype": "<f4", "shape": [-1]}, "invalid shape"),
        ({"type": "image", "mode": "CMYK"}, "invalid image settings"),
        ({"type": "image", "quality": 0}, "invalid image settings"),
        ({"type": "image", "script": "rm -rf /"}, "unknown settings"),
        ("int", "must be an object"),
    ],
)
def test_damaged_field_settings_are_refused_in_one_sentence(entry, message):
    with pytest.raises(FormatError, match=message):
        field_from_dict(entry, where="manifest.json fields[0]")
