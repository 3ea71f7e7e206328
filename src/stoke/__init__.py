"""stoke: pack a dataset once, then feed PyTorch training at the speed of the hardware.

The public API: ``stoke.pack`` (source → dataset directory), ``stoke.open`` (directory → map-style
dataset), ``stoke.TokenBlocks`` (token fields → fixed-length blocks for language models),
``stoke.Loader`` (dataset → batches of tensors), ``stoke.mix`` (datasets → one weighted mixture),
``stoke.ops`` (what happens to samples and
batches), ``stoke.profile`` (is training waiting for data, and what to change) and the field types
for declaring a schema. ``Loader``, ``mix``, ``ops`` and ``profile`` import torch, so they are loaded on first
use: the CLI's pack, inspect and verify start without it.

Example:
    >>> import numpy as np, stoke, tempfile
    >>> out = tempfile.mkdtemp() + "/ds"
    >>> _ = stoke.pack({"x": np.zeros((6, 2), np.float32), "y": np.arange(6)}, out, progress=False)
    >>> [batch["y"].tolist() for batch in stoke.Loader(stoke.open(out), batch_size=4, shuffle=False)]
    [[0, 1, 2, 3], [4, 5]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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
from stoke.pack import PackResult, pack
from stoke.pipeline.blocks import TokenBlocks
from stoke.read import Dataset, DatasetView, open

if TYPE_CHECKING:
    from stoke import ops, profile
    from stoke.loader import Loader
    from stoke.mixture import Mixture, mix


def __getattr__(name: str) -> Any:
    if name == "Loader":
        from stoke.loader import Loader

        return Loader
    if name == "ops":
        import stoke.ops

        return stoke.ops
    if name in ("mix", "Mixture"):
        import stoke.mixture

        return getattr(stoke.mixture, name)
    if name == "profile":  # a callable package: stoke.profile(loader) attaches a profiler
        import stoke.profile

        return stoke.profile
    raise AttributeError(f"module 'stoke' has no attribute {name!r}")


__all__ = [
    "BytesField",
    "Dataset",
    "DatasetView",
    "FloatField",
    "ImageField",
    "IntField",
    "JsonField",
    "Loader",
    "Mixture",
    "NDArrayField",
    "PackResult",
    "TextField",
    "TokenBlocks",
    "__version__",
    "mix",
    "open",
    "ops",
    "pack",
    "profile",
]
