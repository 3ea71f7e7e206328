"""The Loader's arguments checked and put in one form, before anything is built from them.

Not for building the pipeline itself (``stoke.loader`` composes it) nor for DataLoader's own arguments
(``stoke.dataloader_compat`` translates those).

Example:
    >>> from stoke.ops import RandomHorizontalFlip
    >>> flip = RandomHorizontalFlip()
    >>> field_transforms({0: flip}, ["image", "label"]) == {"image": [flip]}
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stoke.errors import ConfigError
from stoke.ops.base import Op
from stoke.ops.batch_transform import BatchTransform
from stoke.ops.features import Features


def field_transforms(transforms: Mapping[Any, Any] | None, fields: Sequence[str]) -> dict[str, list[Op]]:
    """``transforms`` as ``{field name: [op, ...]}``: a single op is a list of one, and an int key is the
    position of a field among the loaded ones (the values of tuple items are fields in item order)."""
    if transforms is None:
        return {}
    if not isinstance(transforms, Mapping):
        raise ConfigError(
            f"transforms must be a dict of field name to a list of ops, such as {{'image': [Resize(224)]}}, "
            f"got {type(transforms).__name__}"
        )
    chosen: dict[str, list[Op]] = {}
    for key, ops in transforms.items():
        if isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(fields):
                raise ConfigError(f"transforms names position {key}, but the items have {len(fields)} loaded fields")
            name = fields[key]
        elif isinstance(key, str):
            name = key
        else:
            raise ConfigError(f"transforms is keyed by field name (or position), not {type(key).__name__} {key!r}")
        if name not in fields:
            raise ConfigError(f"transforms names the field {name!r}, which is not loaded (fields: {', '.join(fields)})")
        listed = [ops] if isinstance(ops, Op) else ops
        if not isinstance(listed, (list, tuple)) or not all(isinstance(op, Op) for op in listed):
            shown = (
                next((op for op in listed if not isinstance(op, Op)), listed)
                if isinstance(listed, (list, tuple))
                else ops
            )
            raise ConfigError(
                f"transforms[{name!r}] must be a stoke op or a list of them (stoke.ops: Resize, Normalize, ...), "
                f"not {type(shown).__name__} {shown!r:.60}"
            )
        chosen[name] = list(listed)
    return chosen


def with_features(transforms: Sequence[Any] | None, reader: Any, automatic: bool) -> list[Any]:
    """The batch transforms, each ``Features`` bound to the loaded columns; a dataset packed from a table
    gets ``Features()`` first when it has none (and ``automatic``: no ``collate_fn``)."""
    if transforms is not None and (
        isinstance(transforms, (str, BatchTransform)) or not isinstance(transforms, Sequence)
    ):
        transforms = [transforms]  # one transform given bare; a wrong type is named by the Loader's check
    chosen = list(transforms or ())
    manifest = getattr(reader, "dataset", None) and reader.dataset.manifest
    source = manifest.source if manifest is not None and isinstance(manifest.source, Mapping) else {}
    is_table = source.get("kind") == "table"
    added = is_table and automatic and not any(isinstance(transform, Features) for transform in chosen)
    if added:
        chosen.insert(0, Features())
    if not any(isinstance(transform, Features) for transform in chosen):
        return chosen
    classes = {entry.name: entry.classes for entry in manifest.fields} if manifest is not None else {}
    label = source.get("label") if is_table else "label"
    bound = [
        transform.bind(reader.fields, classes, label) if isinstance(transform, Features) else transform
        for transform in chosen
    ]
    if added and not bound[0].columns:
        bound.pop(0)  # the automatic one, with no numeric column loaded (fields=["label"]): nothing to stack
    return bound


def translated(value: Any, settings: Mapping[str, Any], name: str, dataloader_name: str) -> Any:
    """The Loader's ``name`` setting: ``value``, or the one DataLoader's ``dataloader_name`` stands for
    (``value`` must then be left at "auto")."""
    if name not in settings:
        return value
    if value != "auto":
        raise ConfigError(f"give {name}= or DataLoader's {dataloader_name}=, not both")
    return settings[name]
