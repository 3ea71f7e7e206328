"""Load-time quarantine: a sample that fails is recorded with its reason, and the policy decides the rest.

A sample fails when its bytes do not match the stored checksum, when it cannot be decoded, or when a
transform (the user's own included) raises on it. The batch job keeps the exception (``stoke.pipeline.batch``);
when the batch is finished, :class:`FailureSettler` turns each failure into a
:class:`~stoke.errors.SampleError` that names the sample (index, shard) and chains the original
exception with its traceback, and hands it to :class:`LoadQuarantine`:

* it is logged (logger ``stoke``, level WARNING) and listed in ``loader.quarantine`` (one record per
  sample: index, epoch, where, reason);
* the policy ``on_error`` says what the batch does: ``"skip"`` drops the sample (a shorter batch),
  ``"replace"`` puts a deterministic replacement in its row (``replacement``: the same in every run, so
  batch shapes stay fixed and a resumed run matches), ``"raise"`` stops the epoch with the error;
* the error budget ``max_bad_fraction`` turns a flood into one clear error: when more than
  ``max(floor(max_bad_fraction * epoch size), MIN_BAD_SAMPLES)`` samples fail in one epoch,
  :class:`ErrorBudgetExceeded` names the count and the first causes, chained to the first failure's
  traceback. The floor of 10 samples lets ``"skip"`` skip on small datasets too (with the default 0.001 a
  dataset under 10,000 samples tolerates 10 failures an epoch); ``max_bad_fraction=0`` tolerates none.

Failures are kept as data, not as exceptions: a record per sample (index, epoch, shard, reason, error
type), at most ``MAX_RECORDS`` of them (``num_failed`` counts them all), and for the budget only the current
epoch's count, its first causes' text and its first exception. Under ``"skip"`` and ``"replace"`` every
admitted failure's traceback frames are cleared, so that no failure holds a batch buffer alive.

Never a zero placeholder: a failed sample's row is removed or refilled, never left as it was
(:meth:`FailureSettler.settle`).

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
import traceback
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from stoke.errors import ConfigError, ErrorBudgetExceeded, SampleError, keeps_epoch
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.buffers import BufferSet
from stoke.rng import sample_uniforms, stream_id

POLICIES = ("skip", "replace", "raise")
MAX_REPLACEMENT_ATTEMPTS = 16
_REPLACE_STREAM = stream_id("stoke", "replace")
_FIRST_CAUSES = 3
MIN_BAD_SAMPLES = 10
MAX_RECORDS = 100_000

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
        self.num_failed = 0  # distinct samples that failed, listed in ``records`` up to MAX_RECORDS
        self._recorded: set[int] = set()
        self._epoch: int | None = None  # the epoch the budget counts
        self._count = 0
        self._causes: list[str] = []
        self._first: SampleError | None = None

    def allowed(self, epoch_size: int) -> int:
        """How many samples of an epoch of ``epoch_size`` may fail before the budget stops it."""
        if self.max_bad_fraction == 0:
            return 0
        return max(math.floor(self.max_bad_fraction * epoch_size), MIN_BAD_SAMPLES)

    def failed_in(self, epoch: int) -> int:
        """Failures counted so far in ``epoch`` (0 for an epoch the budget no longer counts)."""
        return self._count if epoch == self._epoch else 0

    def admit(self, failure: SampleError, epoch: int, epoch_size: int) -> None:
        """Record one failed sample; raises it under ``"raise"``, or the budget error when over budget."""
        index = failure.index if failure.index is not None else -1
        if index not in self._recorded:
            self._recorded.add(index)
            self.num_failed += 1
            if len(self.records) < MAX_RECORDS:
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
        _without_frames(failure)  # nothing it keeps (the first failure, below) holds a batch buffer alive
        if epoch != self._epoch:
            self._epoch, self._count, self._causes, self._first = epoch, 0, [], None
        self._count += 1
        if len(self._causes) < _FIRST_CAUSES:
            self._causes.append(str(failure))
        if self._first is None:
            self._first = failure
        allowed = self.allowed(epoch_size)
        if self._count > allowed:
            first = self._first
            budget = ErrorBudgetExceeded(
                f"{self._count} samples failed in epoch {epoch}, more than max_bad_fraction="
                f"{self.max_bad_fraction:g} allows ({allowed} of {epoch_size}); first: {'; '.join(self._causes)}; "
                f"fix the data (stoke verify lists damaged samples) or the transform, or raise max_bad_fraction",
                index=first.index,
                shard=first.shard,
            )
            raise budget from first.__cause__ or first

    def replacement(self, seed: int, epoch: int, index: int, attempt: int, size: int) -> int:
        """The position that stands in for dataset index ``index`` on ``attempt`` (deterministic)."""
        draws = sample_uniforms(seed, epoch, _REPLACE_STREAM, np.array([index]), attempt + 1)
        return min(int(draws[0, attempt] * size), size - 1)

    def all_failed(self, epoch: int, epoch_size: int) -> ErrorBudgetExceeded:
        """The error for an epoch that ends without delivering a sample, all ``epoch_size`` having failed."""
        return ErrorBudgetExceeded(
            f"every one of the {epoch_size:,} samples of epoch {epoch} failed ({self.failed_in(epoch):,} are "
            f"listed in loader.quarantine), so it delivered no batch; fix the data (stoke verify lists damaged "
            f"samples) or the transform"
        )


class SampleSource(Protocol):
    """What settling failures asks of the Loader's reader (``stoke.pipeline.reader``)."""

    def __len__(self) -> int: ...

    def describe(self, position: int) -> str:
        """Where the sample at ``position`` is, for an error (index, shard)."""
        ...

    def dataset_index(self, positions: np.ndarray) -> np.ndarray:
        """The dataset indices of these positions."""
        ...


class FailureSettler:
    """Settles a finished batch's failures: each named and admitted to the quarantine, then the policy
    applied to the batch's rows.

    ``draw`` and ``produce`` are the Loader's (see ``stoke.pipeline.executor``): under ``"replace"`` a
    stand-in is produced here, in the thread that finishes the batch, into the failed sample's row.

    Example:
        >>> class Reader:
        ...     def __len__(self): return 4
        ...     def describe(self, position): return f"sample {position}"
        ...     def dataset_index(self, positions): return positions
        >>> rows = BufferSet({"index": np.arange(4), "x": np.array([0.0, 1.0, 2.0, 3.0])})
        >>> job = BatchJob(0, np.arange(4), np.arange(4), rows, {}, chunk=4)
        >>> job.fail(1, ValueError("undecodable"))
        >>> settler = FailureSettler(LoadQuarantine("skip"), Reader(), seed=0, draw=None, produce=None)
        >>> settler.settle(job, epoch_size=4), rows.arrays["x"][:3].tolist()
        (3, [0.0, 2.0, 3.0])
    """

    def __init__(
        self,
        quarantine: LoadQuarantine,
        reader: SampleSource,
        seed: int,
        draw: Callable[[int, np.ndarray], dict[str, Any]] | None,
        produce: Callable[[BatchJob, int], None] | None,
    ) -> None:
        self.quarantine = quarantine
        self.reader = reader
        self.seed = seed
        self.draw = draw
        self.produce = produce

    def settle(self, job: BatchJob, epoch_size: int) -> int:
        """Quarantine the job's failed samples and apply the policy; returns the rows left."""
        failures = sorted(job.failures, key=lambda failure: failure[0])
        job.failures.clear()  # the failures are data now (loader.quarantine); see _without_frames
        for row, error in failures:
            self.quarantine.admit(self.describe(job, row, error), job.epoch, epoch_size)
        buffers = job.buffers
        if self.quarantine.policy == "replace":
            for row, _ in failures:
                self._replace(job, row, epoch_size)
            return job.size
        failed = {row for row, _ in failures}
        keep = np.array([row for row in range(job.size) if row not in failed], dtype=np.int64)
        for array in buffers.arrays.values():
            array[: len(keep)] = array[keep]
        for values in buffers.lists.values():
            values[: len(keep)] = [values[row] for row in keep]
        if job.padding is not None:
            job.padding = job.padding[keep]
        return len(keep)

    def describe(self, job: BatchJob, row: int, error: BaseException) -> SampleError:
        """``error`` as a SampleError naming the sample in ``row`` (index, shard), chained to the original."""
        if isinstance(error, SampleError) and error.index is not None:
            return error  # already names its sample
        index = int(job.indices[row])
        where = self.reader.describe(int(job.positions[row]))
        failure = SampleError(f"{where} failed: {type(error).__name__}: {error}", index=index)
        failure.__cause__ = error
        return failure

    def fatal(self, job: BatchJob) -> BaseException:
        """The job's fatal error (not one sample's fault), named by the first sample it held; an interrupt
        (Ctrl-C while the loop's own thread made the batch: ``workers="inline"``) as it is, the user's."""
        error = job.error
        assert error is not None
        if keeps_epoch(error):
            return error  # says what is wrong with the machine, or is the user's, whatever the sample
        return self.describe(job, job.error_position or 0, error)

    def _replace(self, job: BatchJob, row: int, epoch_size: int) -> None:
        """Fill ``row`` with the failed sample's deterministic stand-in (produced here, in this thread)."""
        assert self.draw is not None and self.produce is not None
        failed_index, epoch, buffers = int(job.indices[row]), job.epoch, job.buffers
        for attempt in range(MAX_REPLACEMENT_ATTEMPTS):
            position = self.quarantine.replacement(self.seed, epoch, failed_index, attempt, len(self.reader))
            index = self.reader.dataset_index(np.array([position]))
            rows = BufferSet(
                {name: array[row : row + 1] for name, array in buffers.arrays.items()},
                {name: [None] for name in buffers.lists},
            )
            single = BatchJob(0, np.array([position]), index, rows, self.draw(epoch, index), 1, epoch)
            single.run(self.produce, 0, 1)
            if single.error is not None:
                raise single.error
            if not single.failures:
                buffers.arrays["index"][row] = index[0]
                for name, values in rows.lists.items():
                    buffers.lists[name][row] = values[0]
                return
            self.quarantine.admit(self.describe(single, 0, single.failures[0][1]), epoch, epoch_size)
        raise SampleError(
            f"no stand-in for sample {failed_index} loaded in {MAX_REPLACEMENT_ATTEMPTS} attempts; "
            f"the dataset looks mostly damaged: run stoke verify",
            index=failed_index,
        )


def _without_frames(error: BaseException) -> BaseException:
    """``error`` (and its causes) with the local variables of its traceback's finished frames cleared.

    A failure's traceback runs through the worker's frames, which hold views of the batch buffers and the
    job that holds the failure: a reference cycle that would keep the buffers alive until the cyclic garbage
    collector runs (the pool would allocate new ones meanwhile), or for ever if the failure is kept.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if current.__traceback__ is not None:
            traceback.clear_frames(current.__traceback__)
        current = current.__cause__ or current.__context__
    return error
