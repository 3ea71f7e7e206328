"""``Features``: a table's numeric columns stacked into one float32 ``features`` tensor, ``[B, F]``.

A packed table has one field per column, so a batch holds one ``[B]`` tensor per column; a model wants one
``[B, F]`` matrix. ``Features`` is the batch transform that builds it: the columns given, in that order, or
by default every numeric column (``float`` fields and ``int`` fields without a vocabulary) except the label,
in table order. Categorical columns (``int`` fields with classes) are left out unless named: their codes
are not quantities, so they usually go to an embedding or a one-hot encoding instead. It runs after each
column's own ops, so ``Standardize`` fitted per column is applied first. The Loader adds ``Features()`` by
itself to batches of a dataset packed from a table, unless ``batch_transforms`` already holds one; the
columns stay in the batch too, unless ``keep_columns=False``.

Example:
    >>> import numpy as np, torch
    >>> batch = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([3, 4]), "label": torch.tensor([0, 1])}
    >>> Features(["a", "b"]).apply(batch, None)["features"].tolist()
    [[1.0, 3.0], [2.0, 4.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from stoke.errors import ConfigError
from stoke.ops.base import BatchContext
from stoke.ops.batch_transform import BatchTransform


class Features(BatchTransform):
    """Stack columns into ``batch[name]``, float32 ``[B, F]`` (see the module docstring)."""

    def __init__(
        self,
        columns: Sequence[str] | None = None,
        name: str = "features",
        dtype: torch.dtype = torch.float32,
        keep_columns: bool = True,
    ) -> None:
        if columns is not None and (isinstance(columns, str) or not all(isinstance(c, str) for c in columns)):
            raise ConfigError(f"columns must be a list of field names, got {columns!r}")
        self.columns = list(columns) if columns is not None else None
        self.name = name
        self.dtype = dtype
        self.keep_columns = keep_columns

    def bind(self, fields: Mapping[str, Any], classes: Mapping[str, Any], label: str | None) -> Features:
        """This transform with its columns chosen from the loaded ``fields`` (when it was given none)."""
        if self.columns is not None:
            return self
        columns = [
            name
            for name, field in fields.items()
            if name != label and (field.type_name == "float" or (field.type_name == "int" and not classes.get(name)))
        ]
        return Features(columns, self.name, self.dtype, self.keep_columns)

    def needs(self) -> tuple[str, ...]:
        return tuple(self.columns or ())

    def apply(self, batch: dict[str, Any], context: BatchContext | None) -> dict[str, Any]:
        columns = self.columns or []
        stacked = torch.stack([batch[column].to(self.dtype) for column in columns], dim=1) if columns else None
        out = dict(batch) if self.keep_columns else {k: v for k, v in batch.items() if k not in columns}
        out[self.name] = stacked if stacked is not None else torch.empty((len(batch["index"]), 0), dtype=self.dtype)
        return out

    def __repr__(self) -> str:
        return f"Features({self.columns!r}, name={self.name!r})"
