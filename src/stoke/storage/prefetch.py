"""Fetching shards ahead of need, in the order the epoch will read them.

:class:`ReadPlan` turns an epoch's dataset indices into per-shard read counts and the shards' order of
first need, vectorised with numpy (nothing per sample in Python). Each read counts its shard down; a shard
whose count reaches zero is no longer needed this epoch and is the first the cache may evict.

:class:`Prefetcher` is one background thread that keeps the next ``ahead`` still-needed shards of the plan
in the cache. It only evicts shards the plan no longer needs, so it never pushes out a shard the epoch is
about to read; when the budget is full of needed shards it waits for reads to finish some. A failed
prefetch is left to the read that needs the shard, which fetches on demand and reports the error.

Not for: downloading or verifying (``cache.py``, ``remote.py``).

Example:
    >>> import numpy as np
    >>> plan = ReadPlan(np.array([0, 4, 8]), np.array([5, 6, 0, 1]))  # shards of 4 samples: 0-3, 4-7
    >>> plan.first_need.tolist(), plan.remaining.tolist()
    ([1, 0], [2, 2])
    >>> plan.count_down(0), plan.count_down(0), plan.needed(0)  # the second read of shard 0 was its last
    (False, True, False)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np


class ReadPlan:
    """What one epoch will read: ``remaining[shard]`` reads per shard and ``first_need`` (shards in order)."""

    def __init__(self, shard_starts: np.ndarray, indices: np.ndarray) -> None:
        shard_count = len(shard_starts) - 1
        shards = np.searchsorted(shard_starts, np.asarray(indices, dtype=np.int64), side="right") - 1
        self.remaining = np.bincount(shards, minlength=shard_count).astype(np.int64)
        unique, first = np.unique(shards, return_index=True)
        self.first_need = unique[np.argsort(first, kind="stable")]
        self._cursor = 0  # first_need before the cursor are finished

    def count_down(self, shard: int) -> bool:
        """Count one read of ``shard``; True when that was its last read of the epoch."""
        if self.remaining[shard] <= 0:
            return False
        self.remaining[shard] -= 1
        return bool(self.remaining[shard] == 0)

    def needed(self, shard: int) -> bool:
        return bool(self.remaining[shard] > 0)

    def upcoming(self, ahead: int) -> list[int]:
        """The next ``ahead`` shards, in order of first need, that still have reads to come."""
        while self._cursor < len(self.first_need) and not self.remaining[self.first_need[self._cursor]]:
            self._cursor += 1
        chosen: list[int] = []
        for shard in self.first_need[self._cursor :]:
            if self.remaining[shard]:
                chosen.append(int(shard))
                if len(chosen) == ahead:
                    break
        return chosen


class Prefetcher:
    """A daemon thread: ``fetch(shard) -> bool`` for the plan's upcoming shards, ``ahead`` at a time.

    ``fetch`` returns False when the cache has no room without evicting a needed shard; the thread then
    waits (``wait(timeout)``) for reads to progress. ``is_cached(shard)`` skips shards already there.
    """

    def __init__(
        self,
        fetch: Callable[[int], bool],
        is_cached: Callable[[int], bool],
        wait: Callable[[float], None],
        ahead: int,
    ) -> None:
        self._fetch = fetch
        self._is_cached = is_cached
        self._wait = wait
        self.ahead = ahead
        self._plan: ReadPlan | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failed: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="stoke-prefetch", daemon=True)
        self._thread.start()

    def follow(self, plan: ReadPlan) -> None:
        """Fetch for ``plan`` from now on (the previous plan is dropped)."""
        self._plan = plan
        self._failed = set()
        self.poke()

    def poke(self) -> None:
        """Look again: a shard was finished or the plan changed."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            plan = self._plan
            shard = None
            if plan is not None:
                upcoming = plan.upcoming(self.ahead)
                missing = [s for s in upcoming if s not in self._failed and not self._is_cached(s)]
                shard = missing[0] if missing else None
            if shard is None:
                self._wake.wait(timeout=0.25)
                self._wake.clear()
                continue
            try:
                fetched = self._fetch(shard)
            except Exception:  # the read that needs it fetches it again and reports the error
                self._failed.add(shard)
                continue
            if not fetched:
                self._wait(0.2)
