"""Load-time quarantine: a sample that fails is recorded with its reason, and the policy decides the rest.

A sample fails when its bytes do not match the stored checksum, when it cannot be decoded, or when a
transform (the user's own included) raises on it. The Loader turns each failure into a
:class:`~stoke.errors.SampleError` that names the sample (index, shard) and chains the original
exception with its traceback, and hands it to :class:`LoadQuarantine`:

* it is logged (logger ``stoke``, level WARNING) and listed in ``loader.quarantine`` (one record per
  sample: index, epoch, where, reason);
* the policy ``on_error`` says what the batch does: ``"skip"`` drops the sample (a shorter batch),
  ``"replace"`` puts a deterministic replacement in its row (``replacement``: the same in every run, so
  batch shapes stay fixed and a resumed run matches), ``"raise"`` stops the epoch with the error;
* the error budget ``max_bad_fraction`` turns a flood into one clear error: when more than
  ``floor(max_bad_fraction * epoch size)`` samples fail in one epoch, :class:`ErrorBudgetExceeded` names
  the count and the first causes, chained to the first failure's traceback. With the default 0.001 a
  dataset under 1,000 samples tolerates none: its first failure stops the epoch.

Never a zero placeholder: a failed sample's row is removed or refilled, never left as it was.

Example:
    >>> quarantine = LoadQuarantine("skip", max_bad_fraction=0.1)
    >>> damaged = SampleError("sample 3 (shard-00000.stoke) fails its checksum", index=3)
    >>> quarantine.admit(damaged, epoch=0, epoch_size=20)
    >>> [record["index"] for record in quarantine.records]
    [3]
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from stoke.errors import ConfigError, ErrorBudgetExceeded, SampleError
from stoke.rng import sample_uniforms, stream_id

POLICIES = ("skip", "replace", "raise")
MAX_REPLACEMENT_ATTEMPTS = 16
_REPLACE_STREAM = stream_id("stoke", "replace")
_FIRST_CAUSES = 3

logger = logging.getLogger("stoke")


class LoadQuarantine:
    """Records failed samples, enforces the error budget, and draws replacements; see the module docstring."""

    def __init__(self, policy: str = "skip", max_bad_fraction: float = 0.001) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"on_error must be one of {', '.join(POLICIES)}, got {policy!r}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ConfigError(f"max_bad_fraction must be between 0 and 1, got {max_bad_fraction!r}")
        self.policy = policy
        self.max_bad_fraction = float(max_bad_fraction)
        self.records: list[dict[str, Any]] = []
        self._recorded: set[int] = set()
        self._bad: dict[int, list[SampleError]] = {}

    def admit(self, failure: SampleError, epoch: int, epoch_size: int) -> None:
        """Record one failed sample; raises it under ``"raise"``, or the budget error when over budget."""
        index = failure.index if failure.index is not None else -1
        if index not in self._recorded:
            self._recorded.add(index)
            cause = failure.__cause__
            self.records.append(
                {
                    "index": index,
                    "epoch": epoch,
                    "shard": failure.shard,
                    "reason": str(failure),
                    "error": type(cause).__name__ if cause is not None else type(failure).__name__,
                }
            )
        logger.warning("quarantined: %s", failure)
        if self.policy == "raise":
            raise failure
        failures = self._bad.setdefault(epoch, [])
        failures.append(failure)
        allowed = math.floor(self.max_bad_fraction * epoch_size)
        if len(failures) > allowed:
            first = failures[0]
            causes = "; ".join(str(error) for error in failures[:_FIRST_CAUSES])
            budget = ErrorBudgetExceeded(
                f"{len(failures)} samples failed in epoch {epoch}, more than max_bad_fraction="
                f"{self.max_bad_fraction:g} allows ({allowed} of {epoch_size}); first: {causes}; fix the data "
                f"(stoke verify lists damaged samples) or the transform, or raise max_bad_fraction",
                index=first.index,
                shard=first.shard,
            )
            raise budget from first.__cause__ or first

    def replacement(self, seed: int, epoch: int, index: int, attempt: int, size: int) -> int:
        """The position that stands in for dataset index ``index`` on ``attempt`` (deterministic)."""
        draws = sample_uniforms(seed, epoch, _REPLACE_STREAM, np.array([index]), attempt + 1)
        return min(int(draws[0, attempt] * size), size - 1)

    def forget_epoch(self, epoch: int) -> None:
        """Drop an epoch's budget count (the epoch has ended)."""
        self._bad.pop(epoch, None)
