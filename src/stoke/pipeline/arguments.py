"""The Loader's arguments checked and put in one form, before anything is built from them.

Each function takes the arguments of one concern (the batch size, a count that may be ``"auto"``, the
seed, ``collate_fn``, the timeout, the ranks, the batch keys and batch transforms) and returns the
setting, or raises a ConfigError saying what is wrong and what to pass.

Not for building the pipeline itself (``stoke.loader`` composes it from the builders: the order in
``stoke.pipeline.ordering``, the executor in ``stoke.pipeline.executor``, the buffers in
``stoke.pipeline.buffers``, the tuner in ``stoke.pipeline.autotune``) nor for DataLoader's own arguments
(``stoke.dataloader_compat`` translates those).

Example:
    >>> from stoke.ops import RandomHorizontalFlip
    >>> flip = RandomHorizontalFlip()
    >>> field_transforms({0: flip}, ["image", "label"]) == {"image": [flip]}
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from stoke.dataloader_compat import translate
from stoke.errors import ConfigError
from stoke.machine import available_cores
from stoke.ops.base import Op
from stoke.ops.batch_transform import BatchTransform
from stoke.ops.features import Features
from stoke.pipeline.executor import Executor, executor_kind

DEFAULT_PREFETCH = 3
# workers="inline" with num_threads="auto": the threads that share a batch filled in one call (TokenBlocks), at
# most. The gather is bound by memory misses, which a few cores saturate; each helper spins a moment after a
# batch (stoke.pipeline._tokens), so more would cost cores for nothing.
INLINE_THREADS = 4
# workers="inline" with helpers and prefetch="auto": batches begun ahead of the loop. Two, so that the helpers
# copy the next batch while the loop's thread runs the Python of handing this one over and starting the
# one after (stoke.pipeline._tokens serves begun batches oldest first).
INLINE_DEPTH = 2


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


@dataclass(frozen=True)
class Settings:
    """The Loader's settings of batching, seeding and workers, checked, with DataLoader's arguments folded in."""

    batch_size: int
    seed: int
    executor: type[Executor]  # the kind ``workers=`` names
    num_threads: int
    prefetch: int
    asked: tuple[int | str, int | str]  # num_threads and prefetch as asked: a count, or "auto" to tune
    cores: int  # the cores this process may run on
    pin_memory: bool  # DataLoader's pin_memory=True, where CUDA is available
    threads_given: bool = False  # num_threads was a count, not "auto"
    prefetch_given: bool = False  # prefetch was a count, not "auto"


def settings(
    batch_size: Any,
    seed: int | None,
    workers: Any,
    num_threads: int | str,
    prefetch: int | str,
    collate_fn: Any,
    batch_transforms: Any,
    dataloader_options: Mapping[str, Any],
) -> Settings:
    """The checked settings of these ``Loader`` arguments (``dataloader_options``: DataLoader's own).

    >>> chosen = settings(8, None, "thread", "auto", 2, None, None, {"num_workers": 3})
    >>> chosen.batch_size, chosen.seed, chosen.num_threads, chosen.prefetch, chosen.asked
    (8, 0, 3, 2, (3, 2))
    """
    given = translate(dataloader_options)
    size = batch_size_setting(batch_size)
    kind = executor_kind(workers)
    chosen_seed = seed_setting(seed, given)
    asked = (
        translated(num_threads, given, "num_threads", "num_workers"),
        translated(prefetch, given, "prefetch", "prefetch_factor"),
    )
    check_collate(collate_fn, batch_transforms)
    cores = available_cores()
    threads = count_setting(asked[0], cores, "num_threads")
    depth = count_setting(asked[1], DEFAULT_PREFETCH, "prefetch")
    given_threads, given_depth = asked[0] != "auto", asked[1] != "auto"
    if not kind.in_background:  # the loop's own thread makes each batch, one batch ahead; a batch filled in
        # one call (TokenBlocks) is shared by num_threads threads, the loop's and helpers (inline_settings)
        threads = count_setting(asked[0], min(cores, INLINE_THREADS), "num_threads")
        depth = (INLINE_DEPTH if threads > 1 else 1) if asked[1] == "auto" else depth
        asked = (threads, depth)  # nothing to tune
    pin = bool(given.get("pin_memory"))
    return Settings(size, chosen_seed, kind, threads, depth, asked, cores, pin, given_threads, given_depth)


def inline_settings(given: Settings, fills_rows: bool) -> Settings:
    """``given`` as an executor that makes each batch in the loop's own thread (``workers="inline"``) runs
    it: ``given.num_threads`` threads where the reader ``fills_rows`` (a batch in one call, which they
    share), else 1 and, with prefetch "auto", one batch ahead. A thread count given for a reader that
    makes its rows one by one is a ConfigError, as it could not be used. Other kinds: ``given``.

    >>> chosen = inline_settings(settings(8, None, "inline", 2, "auto", None, None, {}), fills_rows=True)
    >>> chosen.num_threads, chosen.prefetch
    (2, 2)
    >>> chosen = inline_settings(settings(8, None, "inline", "auto", "auto", None, None, {}), fills_rows=False)
    >>> chosen.num_threads, chosen.prefetch
    (1, 1)
    """
    if given.executor.in_background or fills_rows:
        return given
    if given.threads_given and given.num_threads > 1:
        raise ConfigError(
            f"workers='inline' makes every batch in the loop's own thread, and this dataset's samples are made one "
            f"by one, so num_threads={given.num_threads} has no meaning (only token blocks share a batch's fill); "
            f"leave num_threads out, or use workers='thread'"
        )
    depth = given.prefetch if given.prefetch_given else 1
    return replace(given, num_threads=1, prefetch=depth, asked=(1, depth))


def batch_size_setting(batch_size: Any) -> int:
    """``batch_size``, checked: a positive integer (DataLoader's ``None``, unbatched, has no meaning here)."""
    if batch_size is None:
        raise ConfigError(
            "batch_size=None (DataLoader's unbatched mode) has no meaning here; give a batch size, or read "
            "samples one at a time with dataset[i]"
        )
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def seed_setting(seed: int | None, settings: Mapping[str, Any]) -> int:
    """The seed: ``seed``, else a DataLoader generator's (in ``settings``), else 0; the two must agree."""
    if "seed" in settings and seed is not None and seed != settings["seed"]:
        raise ConfigError(f"seed={seed} and a generator seeded with {settings['seed']} disagree; give one")
    return int(settings.get("seed", 0) if seed is None else seed)


def count_setting(value: int | str, automatic: int, name: str) -> int:
    """A count that may be ``"auto"`` (then ``automatic``), else a positive integer.

    >>> count_setting("auto", 8, "num_threads"), count_setting(2, 8, "num_threads")
    (8, 2)
    """
    if value == "auto":
        return automatic
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer or 'auto', got {value!r}")
    return value


def check_collate(collate_fn: Any, batch_transforms: Any) -> None:
    """``collate_fn`` is callable, and not given with batch transforms (it makes the batch itself)."""
    if collate_fn is not None and not callable(collate_fn):
        raise ConfigError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
    if collate_fn is not None and batch_transforms:
        raise ConfigError(
            "batch_transforms run on stoke's batch dict, and collate_fn makes the batch itself; "
            "do the batch transform's work in collate_fn"
        )


def timeout_setting(timeout: float | None, executor: type[Executor] | None = None) -> float | None:
    """Seconds to wait for one batch, or None for ever (DataLoader's ``timeout=0`` means for ever too). An
    ``executor`` that makes batches in the loop's own thread cannot time out: it takes None, said so.

    >>> timeout_setting(0), timeout_setting(30.0)
    (None, 30.0)
    """
    if timeout == 0:
        return None
    if timeout is not None and not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    if timeout is not None and executor is not None and not executor.can_time_out:
        raise ConfigError(
            f"workers='inline' makes every batch in the loop's own thread, where a read that hangs cannot be "
            f"timed out (timeout={timeout:g} was given, or is the default); pass timeout=None to accept that, or use "
            f"workers='thread'"
        )
    return timeout


def order_fits(dataset: Any, available: int | None = None) -> None:
    """A ConfigError when an epoch's order over ``dataset`` (8 bytes a sample, and a bit a sample for
    ``verify="once"``) needs more memory than is ``available`` (default: what psutil says is free): a
    manifest that lists far more samples than its shards hold would otherwise end in an allocation error
    that names nothing.

    Example:
        >>> order_fits(range(1000), available=1 << 20)
        >>> try:
        ...     order_fits(range(10**6), available=1 << 20)
        ... except ConfigError as error:
        ...     print(str(error)[:74])
        the dataset lists 1,000,000 samples: an epoch's order of them takes 8.1 MB
    """
    try:
        samples = len(dataset)
    except TypeError:  # the reader says how many, later
        return
    need = samples * 8 + samples // 8
    if available is None:
        import psutil

        available = psutil.virtual_memory().available
    if need > available:
        raise ConfigError(
            f"the dataset lists {samples:,} samples: an epoch's order of them takes {need / 1e6:,.1f} MB, more "
            f"than the {available / 1e6:,.1f} MB of memory free here; if it is not that large, its manifest is "
            f"wrong (stoke verify names what it lacks); else load a part of it (dataset.select or a split)"
        )


def distributed(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """(rank, world size): as given, else from an initialized ``torch.distributed``, else (0, 1)."""
    if rank is None and world_size is None and torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    world_size = 1 if world_size is None else world_size
    rank = 0 if rank is None else rank
    if not isinstance(world_size, int) or world_size < 1:
        raise ConfigError(f"world_size must be a positive integer, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
    return rank, world_size


def batch_keys(stages: Sequence[Any]) -> list[str]:
    """The keys of the batch dict the field ``stages`` make, with ``index``; a key made twice is an error."""
    outputs = ["index"] + [key for stage in stages for key in stage.output_names()]
    clashes = sorted({key for key in outputs if outputs.count(key) > 1})
    if clashes:
        raise ConfigError(
            f"the batch key {clashes[0]!r} would hold two things (a field's name, its lengths, or 'index'); "
            f"rename the field or leave it out with fields="
        )
    return outputs


def checked_batch_transforms(transforms: Any, reader: Any, keys: Sequence[str], automatic: bool) -> list[Any]:
    """The batch transforms (``with_features``), each a BatchTransform whose needed keys are among ``keys``."""
    chosen = with_features(transforms, reader, automatic)
    for position, transform in enumerate(chosen):
        if not isinstance(transform, BatchTransform):
            raise ConfigError(
                f"batch_transforms[{position}] is {transform!r}, not a stoke.ops.BatchTransform "
                f"(per-field ops go in transforms=)"
            )
        missing = [key for key in transform.needs() if key not in keys]
        if missing:
            raise ConfigError(
                f"batch_transforms[{position}] {transform!r} needs the batch key {missing[0]!r}, which this "
                f"Loader does not load (keys: {', '.join(keys)})"
            )
    return chosen
