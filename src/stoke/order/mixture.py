"""Mixture order: several sources in fixed proportions, every window of the epoch in those proportions.

An epoch of ``epoch_samples`` samples takes ``counts[s]`` from source ``s``: its share of the weights,
rounded by largest remainder so the counts add up. Which source fills each place of the epoch is a
low-discrepancy interleave: source ``s``'s ``k``-th sample gets the time ``(k + phase[s]) / counts[s]``,
and the epoch is the samples sorted by time (ties by source). Any ``W`` consecutive places then hold
``W * counts[s] / epoch_samples`` samples of source ``s`` give or take ``1 + len(sources) * share``, so
every global batch (and every rank's part of it, a contiguous run of it: ``stoke.order.partition``) has
the mixture's proportions, not only the epoch as a whole. The phases are drawn from (seed, epoch) when
shuffled, so the pattern differs between epochs; 0.5 otherwise.

Within a source, samples come as **draws** from an endless sequence of permutations of it: draw ``d`` is
``permutation(seed, source, d // size)[d % size]`` (the identity without shuffling). Epoch ``e`` takes
the draws that follow the previous epoch's. So no sample of a source repeats before every sample of it
was drawn; a source smaller than its share goes on into a fresh permutation within the epoch, a larger
one continues next epoch where this one stopped. Permutations are keyed by the source's *name*, so adding
a source leaves the others' sequences as they were.

Everything is a pure function of the epoch, given where the draws stood at one epoch (the **anchor**,
by default before epoch 0 with the current counts). A saved state carries the anchor of the epoch it was
saved in (the weights and each source's draws before it, a few numbers): resuming finishes that epoch
exactly as it began, even under new weights, and the new weights take effect from the next epoch
(continuing each source's draws where the saved epoch leaves them).

Positions are global ids: source ``s``'s sample ``i`` is ``starts[s] + i``, with ``starts`` the running
sum of the sources' sizes (``stoke.mixture`` maps them back).

Example:
    >>> order = MixtureOrder(["web", "code"], sizes=[6, 2], weights=[3, 1], epoch_samples=8, seed=0, shuffle=False)
    >>> order.counts.tolist(), order.indices(0).tolist()  # code's ids are 6 and 7
    ([6, 2], [0, 1, 6, 2, 3, 4, 7, 5])
    >>> order.indices(1).tolist()  # web continues its sequence (0..5 again), code cycles
    [0, 1, 6, 2, 3, 4, 7, 5]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stoke.errors import ConfigError
from stoke.order.base import Order
from stoke.rng import epoch_generator, stream_id


def shares(weights: Sequence[float], total: int) -> np.ndarray:
    """``total`` split in proportion to ``weights`` by largest remainder (ties to the earlier source).

    >>> shares([3, 1], 10).tolist(), shares([1, 1, 1], 10).tolist()
    ([8, 2], [4, 3, 3])
    """
    weights = np.asarray(weights, dtype=np.float64)
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(np.int64)
    short = int(total - counts.sum())
    if short:
        remainders = exact - counts
        order = np.lexsort((np.arange(len(weights)), -remainders))
        counts[order[:short]] += 1
    return counts


def check_weights(names: Sequence[str], weights: Any) -> list[float]:
    """The weights in ``names``' order, from a mapping name -> weight (or a sequence); a ConfigError for
    a missing, extra, negative or non-finite weight, or all of them zero."""
    if isinstance(weights, Mapping):
        unknown = [name for name in weights if name not in names]
        if unknown:
            raise ConfigError(
                f"weights names {unknown[0]!r}, which is not a source; the sources are {', '.join(names)}"
            )
        missing = [name for name in names if name not in weights]
        if missing:
            raise ConfigError(
                f"weights has no weight for source {missing[0]!r}; give one for each of {', '.join(names)}"
            )
        values = [weights[name] for name in names]
    else:
        values = list(weights)
        if len(values) != len(names):
            raise ConfigError(f"weights has {len(values)} values for {len(names)} sources; give one per source")
    for name, value in zip(names, values):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"the weight of source {name!r} must be a number, got {value!r}")
        if not np.isfinite(value) or value < 0:
            raise ConfigError(f"the weight of source {name!r} must be finite and at least 0, got {value!r}")
    if not any(value > 0 for value in values):
        raise ConfigError("every source has weight 0; give at least one source a positive weight")
    return [float(value) for value in values]


class MixtureOrder(Order):
    """Sources interleaved in proportion to their weights; see the module docstring.

    Args:
        names: the sources' names (they key each source's permutations).
        sizes: the sources' sample counts (each at least 1 where its weight is positive).
        weights: one non-negative weight per source.
        epoch_samples: samples per epoch (at least 1).
        seed: the seed of the permutations and the interleave's phases.
        shuffle: permute within each source and vary the interleave per epoch; else each source in sequence.
    """

    def __init__(
        self,
        names: Sequence[str],
        sizes: Sequence[int],
        weights: Sequence[float],
        epoch_samples: int,
        seed: int,
        shuffle: bool = True,
    ) -> None:
        if isinstance(epoch_samples, bool) or not isinstance(epoch_samples, (int, np.integer)) or epoch_samples < 1:
            raise ConfigError(f"epoch_samples must be a positive integer, got {epoch_samples!r}")
        super().__init__(int(epoch_samples))
        self.names = list(names)
        self.sizes = np.asarray(sizes, dtype=np.int64)
        self.weights = check_weights(self.names, weights)
        self.seed, self.shuffle = seed, bool(shuffle)
        empty = [name for name, size, weight in zip(self.names, self.sizes, self.weights) if weight > 0 and size < 1]
        if empty:
            raise ConfigError(f"source {empty[0]!r} has no samples but a positive weight; give it weight 0 or drop it")
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.counts = shares(self.weights, self.size)
        self._keys = [stream_id("mixture", name) for name in self.names]
        self._anchor = _Anchor(0, np.zeros(len(self.names), np.int64), self.counts, self.weights)

    def counts_in(self, epoch: int) -> np.ndarray:
        """How many samples each source gives in ``epoch``."""
        return self._anchor.counts if epoch == self._anchor.epoch else self.counts

    def draws_before(self, epoch: int) -> np.ndarray:
        """Each source's draws made before ``epoch`` (from the anchor on; epochs before it as if the
        current counts had always held)."""
        anchor = self._anchor
        if epoch < anchor.epoch:
            return epoch * self.counts
        if epoch == anchor.epoch:
            return anchor.draws.copy()
        return anchor.draws + anchor.counts + (epoch - anchor.epoch - 1) * self.counts

    def sources(self, epoch: int) -> np.ndarray:
        """int32 ``[epoch_samples]``: which source fills each place of ``epoch``."""
        counts = self.counts_in(epoch)
        if self.shuffle:
            phases = epoch_generator(self.seed, epoch, stream_id("mixture phases")).random(len(counts))
        else:
            phases = np.full(len(counts), 0.5)
        times = np.concatenate([(np.arange(n) + phase) / n for n, phase in zip(counts, phases) if n])
        which = np.concatenate([np.full(n, s, np.int32) for s, n in enumerate(counts) if n])
        # Stable: equal times keep the sources' order (the concatenation's), as the docstring says.
        return which[np.argsort(times, kind="stable")]

    def source_draws(self, source: int, first: int, count: int) -> np.ndarray:
        """The sample indices (within source ``source``) of its draws ``first .. first + count``."""
        size = int(self.sizes[source])
        if not self.shuffle:
            return np.arange(first, first + count, dtype=np.int64) % size
        out = np.empty(count, np.int64)
        # Consecutive draws: each permutation they reach covers one contiguous run of them.
        for cycle in range(first // size, (first + count - 1) // size + 1):
            low, high = max(first, cycle * size), min(first + count, (cycle + 1) * size)
            permutation = epoch_generator(self.seed, cycle, self._keys[source]).permutation(size)
            out[low - first : high - first] = permutation[low - cycle * size : high - cycle * size]
        return out

    def indices(self, epoch: int) -> np.ndarray:
        """The epoch's global ids, in order."""
        which = self.sources(epoch)
        out = np.empty(self.size, np.int64)
        before = self.draws_before(epoch)
        for source, count in enumerate(self.counts_in(epoch)):
            if count:
                out[which == source] = self.starts[source] + self.source_draws(source, int(before[source]), int(count))
        return out

    def epoch_state(self, epoch: int) -> dict[str, Any]:
        """What a saved state needs to finish ``epoch`` exactly (JSON): its weights, counts, and each
        source's draws before it."""
        weights = self._anchor.weights if epoch == self._anchor.epoch else self.weights
        return {
            "seed": self.seed,
            "sizes": dict(zip(self.names, self.sizes.tolist())),
            "weights": dict(zip(self.names, weights)),
            "counts": dict(zip(self.names, self.counts_in(epoch).tolist())),
            "draws": dict(zip(self.names, self.draws_before(epoch).tolist())),
        }

    def resume(self, epoch: int, saved: Mapping[str, Any] | None, consumed: int = 0) -> None:
        """Anchor at ``epoch`` as ``saved`` (from :meth:`epoch_state`) describes it: that epoch is finished
        with the counts it began with, and later ones take the current weights; a source the state does not
        name starts its draws at 0. None anchors before epoch 0 (a fresh start).

        A source whose size changed (a grown dataset, another view) cannot finish an epoch under way
        (``consumed`` > 0): its draws would land on other samples, so that is refused; at an epoch's start
        its draws go on in permutations of its new size."""
        if saved is None:
            self._anchor = _Anchor(0, np.zeros(len(self.names), np.int64), self.counts, self.weights)
            return
        if saved.get("seed") != self.seed:
            raise ConfigError(
                f"the loader state was saved for a mixture with seed {saved.get('seed')!r}, this one has seed "
                f"{self.seed}; pass stoke.mix(..., seed={saved.get('seed')!r}) to resume it"
            )
        try:
            counts = {str(name): int(value) for name, value in saved["counts"].items()}
            draws = {str(name): int(value) for name, value in saved["draws"].items()}
            weights = {str(name): float(value) for name, value in saved["weights"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ConfigError(f"the loader state's mixture entry is not one stoke wrote ({error!r})") from None
        saved_sizes = saved.get("sizes") if isinstance(saved.get("sizes"), Mapping) else {}
        now = dict(zip(self.names, self.sizes.tolist()))
        resized = [name for name in self.names if counts.get(name) and saved_sizes.get(name) != now[name]]
        if consumed and resized:
            name = resized[0]
            raise ConfigError(
                f"the loader state was saved mid-epoch when source {name!r} had {saved_sizes.get(name)} samples; it "
                f"has {now[name]} now, so the rest of that epoch cannot be recomputed: open the source as it was "
                f"(stoke.open(path, version=N) for a grown dataset), or resume from an epoch's end"
            )
        gone = [name for name, count in counts.items() if count and name not in self.names]
        if gone:
            raise ConfigError(
                f"the loader state's epoch draws from source {gone[0]!r}, which this mixture does not have; "
                f"resume with the sources it was saved with, or load it at an epoch's end"
            )
        anchor_counts = np.array([counts.get(name, 0) for name in self.names], np.int64)
        anchor_draws = np.array([draws.get(name, 0) for name in self.names], np.int64)
        if anchor_counts.sum() != self.size or (anchor_counts < 0).any() or (anchor_draws < 0).any():
            raise ConfigError(
                f"the loader state's mixture counts add up to {int(anchor_counts.sum())}, not this mixture's "
                f"{self.size} samples per epoch (or are negative); it was saved for another mixture"
            )
        empty = [name for name, count, size in zip(self.names, anchor_counts, self.sizes) if count and size < 1]
        if empty:
            raise ConfigError(f"the loader state's epoch draws from source {empty[0]!r}, which has no samples here")
        self._anchor = _Anchor(epoch, anchor_draws, anchor_counts, [weights.get(name, 0.0) for name in self.names])


class _Anchor:
    """Where the draws stood at one epoch: ``draws`` made before it, ``counts`` and ``weights`` in it."""

    __slots__ = ("counts", "draws", "epoch", "weights")

    def __init__(self, epoch: int, draws: np.ndarray, counts: np.ndarray, weights: list[float]) -> None:
        self.epoch, self.draws, self.counts, self.weights = epoch, draws, counts, weights
