"""stoke: pack a dataset once, then feed PyTorch training at the speed of the hardware."""

from stoke import ops
from stoke._version import __version__
from stoke.format.fields import (
    BytesField,
    FloatField,
    ImageField,
    IntField,
    JsonField,
    NDArrayField,
    TextField,
)
from stoke.loader import Loader
from stoke.pack import PackResult, pack
from stoke.read import Dataset, DatasetView, open

__all__ = [
    "BytesField",
    "Dataset",
    "DatasetView",
    "FloatField",
    "ImageField",
    "IntField",
    "JsonField",
    "Loader",
    "NDArrayField",
    "PackResult",
    "TextField",
    "__version__",
    "open",
    "ops",
    "pack",
]
