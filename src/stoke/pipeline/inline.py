"""The inline executor: every batch made in the loop's own thread, when it is started, with no worker at all.

For work that costs less than handing it to a worker: a batch of TokenBlocks is one call of the C
gather (``pipeline/_tokens.c``), 12-20 µs for 16 blocks of 2,048 tokens on the development machine,
while waking a worker thread, passing it the job, and waking the loop again costs more than that on a
small machine (each handoff is a futex wake and a GIL handover). Made inline, the same Loader delivered
583 against 260 M tokens/s at 16 blocks a batch (``benchmarks/tokens.py``, 2 cores, medians of 3 runs).
Everything else is the Loader's as with threads: the order, the buffers, the checks (``verify``), the
quarantine, the state and resume. DataLoader's ``num_workers=0`` is the same idea.

What it gives up, and so the Loader asks for it explicitly: a read that hangs (a stalled network disk)
hangs the loop, since the loop is the thread that reads; no timeout can stop it, so
``workers="inline"`` takes ``timeout=None`` (``can_time_out`` is False), and the work does not overlap
the training step (for token blocks, tens of microseconds a batch against a step of milliseconds).

Example:
    >>> import numpy as np
    >>> from stoke.pipeline.batch import BatchJob
    >>> from stoke.pipeline.buffers import BufferSet
    >>> out = np.zeros(3)
    >>> def produce(job, row): out[row] = job.indices[row] * job.params["scale"]
    >>> executor = InlineExecutor(1, produce, lambda epoch, indices: {"scale": 2.0})
    >>> job = BatchJob(0, np.arange(3), np.arange(3), BufferSet({}), {}, chunk=3)
    >>> executor.start(job); job.done.is_set(), out.tolist()
    (True, [0.0, 2.0, 4.0])
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from stoke.errors import ConfigError

if TYPE_CHECKING:
    from stoke.pipeline.batch import BatchJob
    from stoke.pipeline.shared import SharedBlock


class InlineExecutor:
    """Runs each job's samples in the thread that starts it (``stoke.pipeline.executor.Executor``); its one
    "worker" is that thread, whatever count it is made with."""

    resizable: ClassVar[bool] = False
    shared_buffers: ClassVar[bool] = False
    can_time_out: ClassVar[bool] = False
    in_background: ClassVar[bool] = False
    broken = False  # a sample's error is its job's; nothing here can die

    def __init__(
        self,
        num_workers: int,
        produce: Callable[[BatchJob, int], None],
        draw: Callable[[int, np.ndarray], dict[str, Any]],
    ) -> None:
        self._produce = produce
        self._draw = draw
        self._thread = threading.get_native_id()  # the thread that made it: the Loader's, which starts jobs

    @property
    def num_workers(self) -> int:
        return 1

    @property
    def cpu_stat_paths(self) -> list[str]:
        """The ``/proc`` stat file of the thread that made it (the one that runs the work)."""
        return [f"/proc/self/task/{self._thread}/stat"]

    def start(self, job: BatchJob) -> None:
        """Draw the job's random numbers and produce every sample now; ``job.done`` is set on return."""
        job.params = self._draw(job.epoch, job.indices)
        for start, stop in job.chunks():
            job.run(self._produce, start, stop)

    def resize(self, num_workers: int) -> None:
        """Only one "worker", the calling thread: any other count is refused."""
        if num_workers != 1:
            raise ConfigError(
                f"workers='inline' makes every batch in the loop's own thread, so it cannot run {num_workers} "
                f"workers; use workers='thread' for more"
            )

    def retire(self, block: SharedBlock) -> None:
        """Nothing to do: the work writes into the Loader's own arrays."""

    def abandon(self) -> None:
        """Nothing runs between calls: nothing to give up."""

    def shutdown(self, timeout: float = 10.0) -> None:
        """Nothing runs between calls: nothing to stop."""
