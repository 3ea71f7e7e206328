"""Randomness from counters: every random number is a pure function of where it is used.

An augmentation parameter of sample ``i`` in epoch ``e`` is ``hash(seed, e, stream, i, draw)``, where
``stream`` names the op (its field and position). Nothing depends on which thread ran first, how many
threads there are, which batch or rank a sample lands in, or what was drawn before: results are
identical across thread counts, and a resumed or re-partitioned epoch redraws exactly the same values.

The hash is SplitMix64's finalizer applied to a combination of the counters, vectorised over a batch's
indices with numpy (a few microseconds per batch, no generator object per sample). Shuffles use numpy's
Philox generator keyed by (seed, epoch), a counter-based generator designed for exactly this.

Example:
    >>> import numpy as np
    >>> a = sample_uniforms(seed=0, epoch=1, stream=7, indices=np.array([3, 5]), draws=2)
    >>> b = sample_uniforms(seed=0, epoch=1, stream=7, indices=np.array([5]), draws=2)
    >>> bool((a[1] == b[0]).all()), a.shape
    (True, (2, 2))
"""

from __future__ import annotations

import numpy as np
import xxhash

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finalizer, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        values = values ^ (values >> np.uint64(30))
        values = values * _MUL1
        values = values ^ (values >> np.uint64(27))
        values = values * _MUL2
        return values ^ (values >> np.uint64(31))


def _key(*counters: int) -> np.uint64:
    state = np.zeros(1, np.uint64)
    with np.errstate(over="ignore"):
        for counter in counters:
            state = _mix(state + _GOLDEN + np.uint64(counter & _MASK64))
    return state[0]


def stream_id(*names: object) -> int:
    """A stable 64-bit id for a named stream of randomness (e.g. field name and op position)."""
    return xxhash.xxh3_64_intdigest("/".join(map(str, names)).encode())


def sample_uniforms(seed: int, epoch: int, stream: int, indices: np.ndarray, draws: int) -> np.ndarray:
    """Uniform floats in [0, 1) of shape ``(len(indices), draws)``; row ``r`` depends only on ``indices[r]``."""
    key = _key(seed, epoch, stream)
    samples = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        per_sample = _mix(samples * _GOLDEN + key)
        grid = per_sample[:, None] + np.arange(1, draws + 1, dtype=np.uint64)[None, :] * _GOLDEN
    bits = _mix(grid) >> np.uint64(11)
    return bits.astype(np.float64) * (1.0 / (1 << 53))


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """A Philox generator keyed by (seed, epoch, stream): for shuffles and other per-epoch draws."""
    return np.random.Generator(np.random.Philox(key=[int(_key(seed, stream)), epoch & _MASK64]))
