"""``Standardize`` (z-score) and ``MinMaxScale``: batch ops on an int or float field, fitted on training rows.

Both are plain affine maps, ``(x - shift) / scale``, whose constants come from :meth:`fit` on the
*training* rows only: validation and test values must not leak into what the model is fed. ``fit`` takes
a packed dataset and a field name. Given a whole dataset, it uses the stored split named ``split``
(``"train"``, made by ``stoke split``) and refuses a dataset that has no such split; given a view
(``stoke.open(path, split="train")`` or ``dataset.select(rows)``), it uses exactly the rows of the view.
The column is read straight from the shards' offset tables (``Dataset.column``), vectorised, with nothing
decoded. The std is the population one (``ddof=0``), as scikit-learn's ``StandardScaler`` uses; a column
with one value (std or range 0) gets a scale of 1, as there too, so it maps to 0 rather than to NaN.

Not for: images (``Normalize`` works per channel), or filling missing values (done at pack time,
``stoke.prepare.impute``).

Example:
    >>> import torch
    >>> Standardize(mean=2.0, std=4.0).apply(torch.tensor([2.0, 6.0], dtype=torch.float64), None).tolist()
    [0.0, 1.0]
    >>> MinMaxScale(minimum=10, maximum=20).apply(torch.tensor([10, 15, 30]), None).tolist()
    [0.0, 0.5, 2.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from stoke.errors import ConfigError
from stoke.ops.base import BatchContext, BatchOp

if TYPE_CHECKING:
    from stoke.read import Dataset, DatasetView


def training_column(dataset: Dataset | DatasetView, field: str, split: str = "train") -> np.ndarray:
    """The values of ``field`` over the training rows (see the module docstring), as float64, all finite."""
    from stoke.read import DatasetView

    if field not in dataset.fields:
        raise ConfigError(f"the dataset has no field {field!r}; its fields are {list(dataset.fields)}")
    if dataset.fields[field].type_name not in ("int", "float"):
        raise ConfigError(f"field {field!r} is a {dataset.fields[field].type_name} field; scaling needs int or float")
    if not isinstance(dataset, DatasetView):
        parts = dataset.splits().parts if dataset.has_splits() else {}
        if split not in parts:
            raise ConfigError(
                f"{dataset.root} has no split {split!r} to fit {field!r} on (its splits: {sorted(parts) or 'none'}); "
                f"run `stoke split {dataset.root}` or pass the training rows, stoke.open(path, split='train')"
            )
        dataset = dataset.select(parts[split])
    values = dataset.column(field).astype(np.float64)
    if values.size == 0:
        raise ConfigError(f"there are no training rows to fit {field!r} on")
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise ConfigError(
            f"field {field!r} holds {values[bad]} in training row {bad}; pack the table with a missing-value "
            f"policy (missing=) so that every value is a finite number"
        )
    return values


class _Affine(BatchOp):
    """``(x - shift) / scale`` in ``dtype``; what Standardize and MinMaxScale share."""

    def __init__(self, shift: float, scale: float, dtype: torch.dtype) -> None:
        if not np.isfinite(shift) or not np.isfinite(scale) or scale <= 0:
            raise ConfigError(f"{type(self).__name__} needs a finite shift and a positive scale, got {shift}, {scale}")
        if not dtype.is_floating_point:
            raise ConfigError(f"{type(self).__name__} outputs a floating-point dtype, not {dtype}")
        self._shift, self._scale, self.dtype = float(shift), float(scale), dtype

    def output_dtype(self, dtype: Any) -> torch.dtype:
        return self.dtype

    def apply(self, batch: torch.Tensor, context: BatchContext | None) -> torch.Tensor:
        return ((batch.to(torch.float64) - self._shift) / self._scale).to(self.dtype)


class Standardize(_Affine):
    """``(x - mean) / std``; build it with :meth:`fit` so the statistics are the training rows' own."""

    def __init__(self, mean: float, std: float, dtype: torch.dtype = torch.float32) -> None:
        self.mean, self.std = float(mean), float(std)
        super().__init__(self.mean, self.std if self.std > 0 else 1.0, dtype)

    @classmethod
    def fit(
        cls, dataset: Dataset | DatasetView, field: str, split: str = "train", dtype: torch.dtype = torch.float32
    ) -> Standardize:
        """Mean and std of ``field`` over the training rows of ``dataset`` (see the module docstring)."""
        values = training_column(dataset, field, split)
        return cls(float(values.mean()), float(values.std()), dtype)


class MinMaxScale(_Affine):
    """``(x - minimum) / (maximum - minimum)``: training values to [0, 1]; others may fall outside."""

    def __init__(self, minimum: float, maximum: float, dtype: torch.dtype = torch.float32) -> None:
        if maximum < minimum:
            raise ConfigError(f"MinMaxScale needs minimum <= maximum, got {minimum} > {maximum}")
        self.minimum, self.maximum = float(minimum), float(maximum)
        spread = self.maximum - self.minimum
        super().__init__(self.minimum, spread if spread > 0 else 1.0, dtype)

    @classmethod
    def fit(
        cls, dataset: Dataset | DatasetView, field: str, split: str = "train", dtype: torch.dtype = torch.float32
    ) -> MinMaxScale:
        """Minimum and maximum of ``field`` over the training rows of ``dataset``."""
        values = training_column(dataset, field, split)
        return cls(float(values.min()), float(values.max()), dtype)
