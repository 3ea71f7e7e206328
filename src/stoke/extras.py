"""Optional libraries: import one where a feature needs it, or say in one line which extra brings it.

``pip install stoke`` installs the fast image and array path and the core commands (pack, open, Loader,
inspect, verify, split, bench on your own images); the other features need libraries that only their
users want, installed as extras (``pip install 'stoke[tables]'``; ``pyproject.toml`` lists them and says
why each is where it is). Every place in stoke that imports one of those libraries does it through
:func:`require`, inside the function that needs it, so ``import stoke`` stays light and a missing library
is one sentence, a :class:`~stoke.errors.MissingExtra` (a ``ConfigError``: exit code 2 from the CLI), that
names the feature and the extra to install.

Not for: libraries that only make something faster and have a fallback (libturbojpeg for region
decoding, NVML in the profiler): those are looked for and their absence is reported where it matters.

Example:
    >>> require("json", extra="tables", what="reading JSON").dumps([1])
    '[1]'
    >>> try:
    ...     require("pyarrow_not_installed_here", extra="tables", what="reading the table t.csv")
    ... except MissingExtra as error:
    ...     print(error)
    reading the table t.csv needs pyarrow_not_installed_here, which this install lacks: pip install 'stoke[tables]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

from stoke.errors import MissingExtra

# The module stoke imports: (what a message calls it, the requirement in pyproject.toml that installs it).
# tests/test_extras.py checks that every require() in src/ names a module listed here and an extra whose
# requirements hold that requirement.
LIBRARIES: dict[str, tuple[str, str]] = {
    "pyarrow": ("pyarrow", "pyarrow"),
    "sklearn": ("scikit-learn", "scikit-learn"),
    "scipy": ("SciPy", "scipy"),
    "tokenizers": ("Hugging Face tokenizers", "tokenizers"),
    "matplotlib": ("matplotlib", "matplotlib"),
    "torch.utils.tensorboard": ("TensorBoard", "tensorboard"),
    "fsspec": ("fsspec", "fsspec"),
    "s3fs": ("s3fs (fsspec's S3)", "s3fs"),
    "gcsfs": ("gcsfs (fsspec's Google Cloud Storage)", "gcsfs"),
    "aiohttp": ("aiohttp (fsspec's HTTP)", "aiohttp"),
    "distributed": ("Dask distributed", "dask"),  # dask[distributed]
}


def library(module: str) -> tuple[str, str]:
    """(the name messages use, the pyproject requirement) of ``module`` or of the package it is part of.

    Example:
        >>> library("sklearn.datasets"), library("somewhere.else")
        (('scikit-learn', 'scikit-learn'), ('somewhere.else', 'somewhere.else'))
    """
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = LIBRARIES.get(".".join(parts[:end]))
        if found is not None:
            return found
    return module, module


def require(module: str, *, extra: str, what: str) -> ModuleType:
    """Import ``module`` and return it, or raise MissingExtra: "WHAT needs LIBRARY ...: pip install 'stoke[EXTRA]'".

    ``what`` names the feature in the words the user used (``stoke pack --engine dask``, ``reading the
    table t.csv``). A library that is installed but fails to import (a broken build, a missing system
    library) is told apart from one that is absent, with the import error's own words.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        name = library(module)[0]
        install = f"pip install 'stoke[{extra}]'"
        if _absent(error, {module.split(".")[0], library(module)[1]}):
            message = f"{what} needs {name}, which this install lacks: {install}"
        else:
            detail = " ".join(str(error).split())  # one line, whatever the library's message
            message = f"{what} needs {name}, which is installed but cannot be imported ({detail}): {install}"
        raise MissingExtra(message, module=module, extra=extra) from error


def _absent(error: BaseException | None, names: set[str]) -> bool:
    """Whether an import failed because the library itself is not there (not one of its own dependencies,
    and not an error while it ran): a ModuleNotFoundError for one of ``names`` anywhere in the chain
    (``torch.utils.tensorboard`` fails on its own ``import tensorboard``)."""
    for _ in range(8):
        if error is None:
            return False
        if isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] in names:
            return True
        error = error.__cause__ or error.__context__
    return False
