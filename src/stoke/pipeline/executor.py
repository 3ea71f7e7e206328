"""The executor protocol: what runs a batch's samples, so that the Loader never asks what runs them.

An executor takes :class:`~stoke.pipeline.batch.BatchJob` objects and produces every sample of each, in
batch order, by calling the Loader's ``produce(job, row)`` with the random numbers its ``draw(epoch,
indices)`` gives. The Loader makes one with :func:`make_executor` from ``Loader(workers=...)`` and uses
only the members of :class:`Executor`. What differs between the kinds lives behind them:

==================  ====================================  ==========================================
                    threads (``pipeline/threads.py``)     processes (``pipeline/processes.py``)
==================  ====================================  ==========================================
random numbers      drawn in the parent, in ``start``      drawn in each worker, from the same counters
``resize``          grows and shrinks while running        refuses another count (forked once)
batch buffers       the parent's arrays                    shared blocks (``shared_buffers``); a
                                                           retired block is unmapped (``retire``)
a worker dies       cannot (a task's error is the job's)   the job fails naming it, and ``broken``
``abandon``         cancels; a stuck thread leaves later   stops every worker now
==================  ====================================  ==========================================

A third kind, ``"inline"`` (``pipeline/inline.py``), has no workers: ``start`` makes the batch in the
loop's own thread, for work cheaper than a handoff (token blocks). It cannot time out a stuck read
(``can_time_out``) and does not run beside the loop (``in_background``).

A new kind (a pool of subinterpreters, a remote pool) is one class with the members of :class:`Executor`,
registered in :data:`EXECUTORS` under the name ``Loader(workers=...)`` takes, and run through the shared
suite in ``tests/pipeline/test_executor.py``. Nothing else changes: the Loader reads ``resizable`` and
``shared_buffers`` when it sizes its tuner and buffers.

Not for deciding how many workers (``stoke.pipeline.autotune``) or what a sample's work is (the Loader's
``produce``, ``stoke.pipeline.reader`` and the stages).

Example:
    >>> import numpy as np
    >>> from stoke.pipeline.batch import BatchJob
    >>> from stoke.pipeline.buffers import BufferSet
    >>> out = np.zeros(4)
    >>> def produce(job, row): out[row] = job.indices[row] + job.params["offset"][row]
    >>> def draw(epoch, indices): return {"offset": np.full(len(indices), 0.5)}
    >>> executor = make_executor("thread", 2, produce, draw)
    >>> job = BatchJob(0, np.arange(4), np.arange(4), BufferSet({}), {}, chunk=2)
    >>> executor.start(job); job.done.wait(5)
    True
    >>> out.tolist(); executor.shutdown()
    [0.5, 1.5, 2.5, 3.5]
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from stoke.errors import ConfigError
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.inline import InlineExecutor
from stoke.pipeline.processes import Draw, ProcessPool, Produce
from stoke.pipeline.shared import SharedBlock
from stoke.pipeline.threads import ThreadExecutor


class Executor(Protocol):
    """Runs batch jobs' samples on workers; the Loader's only view of them.

    Made as ``kind(num_workers, produce, draw)``. ``produce`` and ``draw`` must not hold the Loader (pass
    :func:`weak_method`), so that a dropped Loader is freed at once while its workers still run.
    """

    resizable: ClassVar[bool]
    """Whether ``resize`` may change the number of workers while they run (what the tuner may tune)."""
    shared_buffers: ClassVar[bool]
    """Whether batch buffers must be shared blocks (``stoke.pipeline.shared``): workers in other processes
    write into them."""
    can_time_out: ClassVar[bool]
    """Whether the loop can give up on a batch that takes too long (the Loader's ``timeout``): only when
    something else than the loop's thread does the work."""
    in_background: ClassVar[bool]
    """Whether the work runs beside the loop (workers), or in ``start`` itself, in the loop's thread."""

    @property
    def broken(self) -> bool:
        """A worker died: the executor still fails jobs cleanly, but must be shut down and made afresh."""
        ...

    @property
    def num_workers(self) -> int:
        """How many workers run now."""
        ...

    @property
    def cpu_stat_paths(self) -> list[str]:
        """``/proc`` stat files of the running workers, for the tuner's CPU measurement."""
        ...

    def start(self, job: BatchJob) -> None:
        """Produce every sample of ``job``, after the jobs started before it. Never raises for a sample: a
        sample's error is ``job.failures``, anything else (a worker that died) ``job.error``, and
        ``job.done`` is set when the last chunk ends, whatever happened."""
        ...

    def resize(self, num_workers: int) -> None:
        """Run ``num_workers`` workers from now on; a kind that cannot (``resizable`` False) raises
        ConfigError for any other count than its own."""
        ...

    def retire(self, block: SharedBlock) -> None:
        """``block`` is no longer a batch buffer (the user kept its array): workers that mapped it unmap it."""
        ...

    def abandon(self) -> None:
        """Give up on work that is stuck (a hanging read or transform): return at once and cancel or stop
        what runs; the executor is not used again."""
        ...

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the workers now. Jobs still in work end (``done`` set) cancelled or failed, not finished,
        so nothing waits for them; a worker that does not stop within ``timeout`` seconds is left (a
        thread) or killed (a process)."""
        ...


EXECUTORS: dict[str, type[Executor]] = {"thread": ThreadExecutor, "process": ProcessPool, "inline": InlineExecutor}
"""The executor kinds, by the name ``Loader(workers=...)`` takes."""


def executor_kind(workers: Any) -> type[Executor]:
    """The executor class ``Loader(workers=...)`` names; a ConfigError lists the kinds for anything else.

    >>> executor_kind("process").shared_buffers
    True
    """
    if not isinstance(workers, str) or workers not in EXECUTORS:
        raise ConfigError(f"workers must be {' or '.join(map(repr, EXECUTORS))}, got {workers!r}")
    return EXECUTORS[workers]


def make_executor(workers: str, num_workers: int, produce: Produce, draw: Draw) -> Executor:
    """A running executor of the kind ``workers`` names, with ``num_workers`` workers."""
    return executor_kind(workers)(num_workers, produce, draw)


def weak_method(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` without a strong reference to its object (the Loader): executors and buffers hold this,
    and a reference back to the Loader would make a cycle that keeps it, and its workers, alive.

    >>> class Owner:
    ...     def name(self): return "owner"
    >>> owner = Owner(); call = weak_method(owner.name)
    >>> call()
    'owner'
    >>> del owner; call()
    Traceback (most recent call last):
    ReferenceError: the Loader this worker served has been closed
    """
    reference = weakref.WeakMethod(method)

    def call(*args: Any, **kwargs: Any) -> Any:
        bound = reference()
        if bound is None:
            raise ReferenceError("the Loader this worker served has been closed")
        return bound(*args, **kwargs)

    return call
