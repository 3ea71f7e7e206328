"""``torch.utils.data.DataLoader``'s arguments given to a ``stoke.Loader``: translated, or answered in one sentence.

Code moving from DataLoader passes its arguments as they were. Those with a meaning here are translated into
the Loader's own settings:

* ``num_workers=N``: N workers (``num_threads``; 0, DataLoader's "load in the main process", is one worker);
  they are threads unless ``workers="process"``;
* ``prefetch_factor=F``: ``F * max(1, num_workers)`` batches in flight, DataLoader's total;
* ``generator=g``: the seed ``g.initial_seed()`` (stoke draws every random choice from a seed);
* ``pin_memory=True``: pinned batch buffers where CUDA is available (with ``device="cuda"`` they always are);
* ``persistent_workers``: accepted; stoke's workers always persist across epochs;
* ``timeout=0``: DataLoader's "wait forever", which is ``timeout=None`` here;
* ``collate_fn`` and ``drop_last`` are the Loader's own arguments.

The others (``sampler``, ``batch_sampler``, ``worker_init_fn``, ``multiprocessing_context``, ...) have no
meaning in a Loader that orders samples itself so that it can resume exactly; each raises a
:class:`~stoke.errors.ConfigError` saying what to use instead. docs/migrating.md shows both side by side.

Example:
    >>> translate({"num_workers": 4, "prefetch_factor": 2, "persistent_workers": True})
    {'num_threads': 4, 'prefetch': 8}
    >>> translate({"sampler": object()})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stoke.errors.ConfigError: Loader has no sampler=: stoke orders samples itself so that an epoch can resume ...
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from typing import Any

from stoke.errors import ConfigError

_ORDERING = (
    "stoke orders samples itself so that an epoch can resume exactly; pass shuffle=True or shuffle=False, "
    "weights= (a WeightedRandomSampler's weights) or balance_by='label', or a view of the samples "
    "(dataset.select(indices)) for a SubsetRandomSampler"
)
ANSWERS = {
    "sampler": _ORDERING,
    "batch_sampler": _ORDERING + "; batch_size= and drop_last= make the batches",
    "worker_init_fn": (
        "stoke's workers are threads of this process (forked copies of it with workers='process'), so do "
        "per-worker set-up before creating the Loader; augmentations draw from seed=, not from per-worker seeds"
    ),
    "multiprocessing_context": "process workers (workers='process') are always forked from this process",
    "pin_memory_device": "pass device= (batches are copied there from pinned buffers on their own stream)",
    "in_order": "batches always come in order: they are a function of (seed, epoch) and deterministic",
    "snapshot_every_n_steps": "loader.state_dict() is exact after every batch; save it whenever you checkpoint",
}
TRANSLATED = ("num_workers", "prefetch_factor", "generator", "pin_memory", "persistent_workers")


def translate(options: Mapping[str, Any]) -> dict[str, Any]:
    """The Loader settings that DataLoader's ``options`` stand for; raises ConfigError for the others.

    Returns a dict of Loader argument names (``num_threads``, ``prefetch``, ``seed``, ``pin_memory``) to
    values; keys absent from ``options`` are absent from it.
    """
    settings: dict[str, Any] = {}
    for name in options:
        if name in ANSWERS:
            raise ConfigError(f"Loader has no {name}=: {ANSWERS[name]}")
        if name not in TRANSLATED:
            known = [*TRANSLATED, *ANSWERS, *LOADER_ARGUMENTS]
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}=?" if close else "; see help(stoke.Loader) for its arguments"
            raise ConfigError(f"Loader has no argument {name!r}{hint}")
    workers = options.get("num_workers")
    if workers is not None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ConfigError(f"num_workers must be a non-negative integer, got {workers!r}")
        settings["num_threads"] = max(1, workers)
    factor = options.get("prefetch_factor")
    if factor is not None:
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
            raise ConfigError(f"prefetch_factor must be a positive integer, got {factor!r}")
        settings["prefetch"] = factor * max(1, workers or 0)
    generator = options.get("generator")
    if generator is not None:
        if not hasattr(generator, "initial_seed"):
            raise ConfigError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        settings["seed"] = int(generator.initial_seed())
    if options.get("pin_memory"):
        import torch

        if torch.cuda.is_available():
            settings["pin_memory"] = True
        else:  # as DataLoader does
            warnings.warn(
                "pin_memory=True, but no CUDA device is available: batches stay in pageable memory", stacklevel=3
            )
    return settings


# The Loader's own arguments, for the "did you mean" of a misspelt one.
LOADER_ARGUMENTS = (
    "batch_size",
    "shuffle",
    "seed",
    "drop_last",
    "transforms",
    "device",
    "num_threads",
    "prefetch",
    "fields",
    "names",
    "collate_fn",
    "channels_last",
    "verify",
    "fast_decode",
    "cpu_budget",
    "ram_budget",
    "workers",
    "rank",
    "world_size",
    "weights",
    "balance_by",
    "on_error",
    "max_bad_fraction",
    "timeout",
    "batch_transforms",
    "profile",
    "decode",
)
