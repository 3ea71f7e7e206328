"""The shape of a batch as the loop sees it: the structure of the dataset's items, as ``default_collate`` keeps it.

The Loader assembles every batch as a dict keyed by field name, with ``index`` (the dataset indices),
``<name>_lengths`` and ``<name>_mask`` for padded fields and ``is_padding`` for ranks padded to equal shares.
:class:`BatchStructure` turns that dict into what a user of ``torch.utils.data.DataLoader`` expects from the
same dataset:

* items that are dicts, and every packed dataset (whose ``dataset[i]`` is a dict): the dict itself;
* items that are tuples or lists (``(image, label)``), and arrays given as a tuple ``(X, y)``: a
  :class:`TupleBatch`, a real tuple of the fields in item order, so ``for x, y in loader`` works; the other
  keys (``index``, lengths, masks, ``is_padding``, keys a batch transform adds) are in its ``extras``;
* single values (a dataset of tensors, one array): the batched value itself.

``Loader(names=[...])`` names the values of tuple items, and the batches are then dicts with those keys.
``Loader(collate_fn=fn)`` splits each batch back into samples of the items' structure (each value as stoke
produced it: an image after its sample ops as a CHW tensor, a padded array cut to its own length, text as
``str``) and returns ``fn(samples)``, as DataLoader does. It is not for choosing fields (``fields=``) or
changing values (ops and batch transforms).

Example:
    >>> import torch
    >>> batch = {"x": torch.tensor([1.0, 2.0]), "y": torch.tensor([0, 1]), "index": torch.tensor([4, 7])}
    >>> x, y = BatchStructure("tuple", ["x", "y"]).shape(batch)
    >>> x.tolist(), y.tolist(), BatchStructure("tuple", ["x", "y"]).shape(batch).index.tolist()
    ([1.0, 2.0], [0, 1], [4, 7])
    >>> BatchStructure("dict", ["x", "y"], collate_fn=lambda samples: samples).shape(batch)[1]
    {'x': tensor(2.), 'y': tensor(1)}
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from stoke.errors import ConfigError

LAYOUTS = ("dict", "tuple", "single")


class TupleBatch(tuple):
    """A batch of tuple items: the fields in item order, with the batch's other keys in :attr:`extras`.

    ``extras["index"]`` (also :attr:`index`) holds the samples' dataset indices; a padded field ``f`` has
    ``extras["f_lengths"]`` (and ``extras["f_mask"]`` when 1-D).
    """

    extras: dict[str, Any]

    def __new__(cls, values: Sequence[Any], extras: dict[str, Any]) -> TupleBatch:
        batch = super().__new__(cls, values)
        batch.extras = extras
        return batch

    @property
    def index(self) -> torch.Tensor:
        """The dataset indices of the batch's samples (int64)."""
        return self.extras["index"]

    def __reduce__(self) -> tuple[Any, ...]:
        return TupleBatch, (tuple(self), self.extras)


class BatchStructure:
    """Turns the Loader's batch dict into the loop's batch; see the module docstring.

    Args:
        layout: ``"dict"``, ``"tuple"`` or ``"single"``: the structure of the dataset's items.
        fields: the loaded fields, in item order.
        collate_fn: called with the batch's samples, each shaped like an item; its result is the batch.
    """

    def __init__(self, layout: str, fields: Sequence[str], collate_fn: Callable[[list[Any]], Any] | None = None):
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.fields = list(fields)
        self.collate_fn = collate_fn

    def shape(self, batch: dict[str, Any]) -> Any:
        """The loop's batch made from the Loader's batch dict."""
        if self.collate_fn is not None:
            return self.collate_fn(self.samples(batch))
        if self.layout == "dict":
            return batch
        if self.layout == "single":
            return batch[self.fields[0]]
        extras = {key: value for key, value in batch.items() if key not in self.fields}
        return TupleBatch([batch[name] for name in self.fields], extras)

    def samples(self, batch: dict[str, Any]) -> list[Any]:
        """The batch split into samples shaped like the items, each value cut to its own size."""
        columns = [_rows(batch, name) for name in self.fields]
        count = len(batch["index"])
        if self.layout == "dict":
            return [{name: column[row] for name, column in zip(self.fields, columns)} for row in range(count)]
        if self.layout == "single":
            return list(columns[0][:count])
        return [tuple(column[row] for column in columns) for row in range(count)]


def _rows(batch: dict[str, Any], name: str) -> list[Any]:
    """Field ``name``'s value for each sample: a padded value cut back to its own length."""
    values = batch[name]
    lengths = batch.get(f"{name}_lengths")
    if lengths is None:
        return list(values)
    rows = []
    for row, extent in enumerate(lengths.tolist()):
        extents = extent if isinstance(extent, list) else [extent]
        rows.append(values[row][tuple(slice(0, size) for size in extents)])
    return rows
