"""What this machine gives stoke's process: the CPU cores it may run on.

Packing sizes its process pool with it, the Loader and ``stoke verify`` their threads, ``stoke bench`` and
the profiler their reports. The affinity mask, not the machine's core count: a container, ``taskset`` or a
job scheduler may give the process fewer cores than the machine has.

Not for: how processes start and end (``stoke.lifecycle``), or GPUs (``stoke.device``).

Example:
    >>> available_cores() >= 1
    True
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
