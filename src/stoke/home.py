"""Where stoke keeps what it generates (the demo's data, the benchmark set and its packs).

Example:
    >>> (default_home() / "bench").name  # $STOKE_HOME/bench, else ~/.cache/stoke/bench
    'bench'
"""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    """Where stoke keeps generated data: ``$STOKE_HOME``, else ``$XDG_CACHE_HOME/stoke``, else ``~/.cache/stoke``."""
    if os.environ.get("STOKE_HOME"):
        return Path(os.environ["STOKE_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "stoke"
