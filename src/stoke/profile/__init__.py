"""``stoke.profile``: is the training loop waiting for data, where does the input time go, what to change.

For: profiling a Loader in a real training loop, in code (``stoke.profile(loader)`` or
``Loader(profile=True)``) or around an unchanged script (``stoke profile -- python train.py``). Not for:
benchmarking settings against each other (``stoke bench``). See ``docs/profiling.md``.

The package is callable: ``stoke.profile(loader, ...)`` is :func:`profile`, and its modules stay
importable (``stoke.profile.report``); one name for the feature and its code, as the issue asks. The
modules: ``stages.py`` (per-worker stage counters), ``timeline.py`` (per-step times, CUDA events),
``profiler.py`` (the Loader's hooks), ``report.py`` (verdict and recommendations), ``plot.py``,
``tensorboard.py``, ``nvml.py``. Importing the package does not import torch; :func:`profile` does.

Example:
    >>> import numpy as np, stoke
    >>> loader = stoke.Loader({"x": np.arange(16.0)}, batch_size=4, num_threads=1)
    >>> profiler = stoke.profile(loader)
    >>> for epoch in range(2):
    ...     for batch in loader:
    ...         pass
    >>> profiler.report().steps  # the first step is the warm-up, left out
    7
"""

from __future__ import annotations

import os
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the profiler measures any Loader-like object (profiler.Watched), so no stoke.loader here
    from stoke.profile.profiler import Profiler, Watched
    from stoke.profile.report import Report


def profile(
    loader: Watched,
    out: str | os.PathLike[str] | None = None,
    steps: int | None = None,
    headspace_steps: int = 0,
    warmup: int = 1,
) -> Profiler:
    """Attach a :class:`~stoke.profile.profiler.Profiler` to ``loader`` and return it (see its arguments)."""
    from stoke.profile.profiler import Profiler

    return Profiler(out, steps=steps, headspace_steps=headspace_steps, warmup=warmup).attach(loader)


def __getattr__(name: str) -> Any:
    if name == "Profiler":
        from stoke.profile.profiler import Profiler

        return Profiler
    if name == "Report":
        from stoke.profile.report import Report

        return Report
    raise AttributeError(f"module 'stoke.profile' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    """Lets ``stoke.profile(loader)`` call :func:`profile` while ``stoke.profile`` stays a package."""

    def __call__(self, loader: Watched, **options: Any) -> Profiler:
        return profile(loader, **options)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["Profiler", "Report", "profile"]
