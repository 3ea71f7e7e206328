"""Process workers: the Loader's own pipeline in forked subprocesses, for code that holds the GIL.

Threads are the default because decoding, resizing and copying release the GIL. A transform written in
pure Python (a ``stoke.ops.Map`` of the user's function, or a user's ``Dataset.__getitem__``) does not,
and threads then run one at a time. ``Loader(workers="process")`` runs the same stages in ``num_threads``
forked processes instead:

* **Shared memory, not pickles.** Batch arrays live in anonymous shared blocks
  (``stoke.pipeline.shared``); each worker receives a block's file descriptor once over its Unix socket,
  maps it, and writes its samples straight into the batch the training loop will get. What crosses the
  pipes per chunk is a few dozen bytes: which samples, which rows, which blocks. Only values that are not
  fixed-size tensors (text, JSON, variable-length arrays) come back through the result pipe.
* **Same batches.** Workers run the same ``produce`` on the same positions and draw their random numbers
  from the same (seed, epoch, sample index, op) counters, so a batch is identical whether threads or
  processes built it, with the same ``index`` tensor.
* **Nothing is lost silently.** An exception in a worker comes back with the sample's row and the
  worker's formatted traceback, for the Loader's error policy; a worker that dies (OOM killer,
  segfault, ``kill -9``) fails the batches it held with one error naming its pid and signal instead of
  leaving the loop waiting. Workers are forked
  (they inherit the dataset mapping and the user's transforms without pickling them) and die with the
  parent (``PR_SET_PDEATHSIG``).
* **Stopped at once.** :meth:`ProcessPool.shutdown` (``Loader.close()``, and the Loader's exit hook after
  a Ctrl-C) does not wait for chunks still in work, whose batches are being dropped: a busy worker is
  stopped with a signal. What it was writing is shared memory the parent throws away. Workers ignore
  Ctrl-C, which a terminal sends to the whole process group: the parent decides (``stoke.lifecycle``).

Chunks go to the worker with the fewest chunks outstanding; a collector thread in the parent reads the
results and completes the :class:`~stoke.pipeline.batch.BatchJob`.

:class:`ProcessPool` is an executor (``stoke.pipeline.executor.Executor``) with these differences from
threads behind it: workers draw the random numbers themselves; the number of workers is fixed (``resize``
refuses another); batch buffers must be shared blocks, and a retired block is unmapped in every worker;
a pool whose worker died is ``broken``, and the Loader makes a fresh one for the next epoch.

Example:
    >>> import numpy as np, stoke
    >>> loader = stoke.Loader({"x": np.arange(6.0)}, batch_size=3, shuffle=False, workers="process", num_threads=2)
    >>> [batch["x"].tolist() for batch in loader]
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    >>> loader.close()
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any, ClassVar

import numpy as np

from stoke.errors import ConfigError, StokeError
from stoke.lifecycle import prepare_worker, stop_processes
from stoke.pipeline.batch import BatchJob
from stoke.pipeline.buffers import BufferSet
from stoke.pipeline.shared import SharedBlock, map_descriptor

Produce = Callable[[BatchJob, int], None]
Draw = Callable[[int, np.ndarray], dict[str, Any]]


class WorkerDied(StokeError):  # noqa: N818 - names what happened
    """A worker process ended while it still held samples to produce."""


class RemoteTraceback(Exception):  # noqa: N818 - it is the traceback, shown as the error's cause
    """The formatted traceback of an exception raised in a worker process (its ``__cause__``)."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0])


@dataclass
class _Worker:
    process: Any
    tasks: Any  # parent's end of a socket pair: chunks, blocks (with their descriptors), forget, stop
    results: Any  # parent's read end of a pipe: done / error per chunk
    outstanding: dict[int, tuple[BatchJob, int, int]] = field(default_factory=dict)
    known_blocks: set[int] = field(default_factory=set)
    alive: bool = True


class ProcessPool:
    """``num_workers`` forked processes that run ``produce`` on chunks of batches; see the module docstring."""

    resizable: ClassVar[bool] = False
    shared_buffers: ClassVar[bool] = True
    can_time_out: ClassVar[bool] = True
    in_background: ClassVar[bool] = True

    def __init__(self, num_workers: int, produce: Produce, draw: Draw) -> None:
        if num_workers < 1:
            raise ConfigError(f"a process pool needs at least one worker, got {num_workers}")
        if "fork" not in multiprocessing.get_all_start_methods():
            raise ConfigError("workers='process' needs the fork start method (Linux); use workers='thread' here")
        context = multiprocessing.get_context("fork")
        self._lock = threading.Lock()
        self._chunk_ids = itertools.count()
        self._closing = False
        self.broken = False
        self._workers: list[_Worker] = []
        for number in range(num_workers):
            tasks_parent, tasks_child = context.Pipe(duplex=True)  # a socket pair: it can carry descriptors
            results_parent, results_child = context.Pipe(duplex=False)
            inherited = [conn for worker in self._workers for conn in (worker.tasks, worker.results)]
            process = context.Process(
                target=_worker_main,
                args=(tasks_child, results_child, produce, draw, [tasks_parent, results_parent, *inherited]),
                name=f"stoke-process-{number}",
                daemon=True,
            )
            process.start()
            tasks_child.close()
            results_child.close()
            self._workers.append(_Worker(process, tasks_parent, results_parent))
        self._wake_read, self._wake_write = os.pipe()
        self._collector = threading.Thread(target=self._collect, name="stoke-collector", daemon=True)
        self._collector.start()

    @property
    def num_workers(self) -> int:
        return len(self._workers)

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers]

    @property
    def cpu_stat_paths(self) -> list[str]:
        """``/proc`` stat files of the workers (for measuring their CPU time)."""
        return [f"/proc/{worker.process.pid}/stat" for worker in self._workers if worker.alive]

    def start(self, job: BatchJob) -> None:
        """Send every chunk of ``job`` to a worker (which draws its random numbers); the collector completes
        the job."""
        layout = [
            (name, block.id, job.buffers.arrays[name].shape, job.buffers.arrays[name].dtype.str)
            for name, block in job.buffers.blocks.items()
            if name != "index"  # the parent fills the indices
        ]
        list_names = tuple(job.buffers.lists)
        for start, stop in job.chunks():
            with self._lock:
                living = [worker for worker in self._workers if worker.alive]
                worker = min(living, key=lambda candidate: len(candidate.outstanding)) if living else None
                chunk_id = next(self._chunk_ids)
                if worker is not None:
                    worker.outstanding[chunk_id] = (job, start, stop)
            if worker is None:
                job.finish_chunk(WorkerDied("every worker process has died; see the first error"), start)
                continue
            try:
                for name, block_id, _, _ in layout:
                    if block_id not in worker.known_blocks:
                        self._send_block(worker, job.buffers.blocks[name])
                message = (
                    "chunk", chunk_id, job.epoch, job.positions[start:stop], job.indices[start:stop], start,
                    layout, list_names,
                )  # fmt: skip
                worker.tasks.send(message)
            except OSError:
                pass  # the worker is gone: the collector sees its pipe close and fails its chunks

    def resize(self, num_workers: int) -> None:
        """Refuse any other number of workers: a pool's processes are forked once, with the state they inherit."""
        if num_workers != len(self._workers):
            raise ConfigError(
                f"a process pool keeps the {len(self._workers)} workers it was forked with, so it cannot run "
                f"{num_workers}; make a new pool (workers='thread' resizes while it runs)"
            )

    def abandon(self) -> None:
        """Give up on stuck work: every worker is stopped now (a stuck one is killed)."""
        self.shutdown(timeout=0.5)

    def retire(self, block: SharedBlock) -> None:
        """Tell the workers that mapped ``block`` to unmap it (its array was replaced)."""
        for worker in self._workers:
            if block.id in worker.known_blocks:
                worker.known_blocks.discard(block.id)
                if worker.alive:
                    with contextlib.suppress(OSError):  # a dead worker has nothing to unmap
                        worker.tasks.send(("forget", block.id))

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the workers and the collector now; chunks still in work are failed, not waited for.

        An idle worker leaves when told to; one busy with a chunk is stopped with SIGTERM (SIGKILL if it
        is still there after half a second), since whatever batch it is filling is being dropped. An
        idle worker that has not left after ``timeout`` seconds is killed.
        """
        if self._closing:
            return
        self._closing = True
        with self._lock:
            busy = [worker for worker in self._workers if worker.outstanding]
        for worker in self._workers:
            if worker not in busy:
                with contextlib.suppress(OSError):  # already gone
                    worker.tasks.send(("stop",))
        stop_processes([worker.process for worker in busy])
        for worker in self._workers:
            worker.process.join(timeout)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)
        os.write(self._wake_write, b"x")
        if self._collector is not threading.current_thread():
            self._collector.join(timeout)
        for worker in self._workers:
            self._fail(worker, "the process pool was shut down")
            worker.tasks.close()
            worker.results.close()
        os.close(self._wake_read)
        os.close(self._wake_write)

    # ---- internals --------------------------------------------------------------------------------
    def _send_block(self, worker: _Worker, block: SharedBlock) -> None:
        worker.tasks.send(("block", block.id, block.nbytes))
        send_handle(worker.tasks, block.fd, worker.process.pid)
        worker.known_blocks.add(block.id)

    def _collect(self) -> None:
        by_connection = {worker.results: worker for worker in self._workers}
        while by_connection:
            ready = multiprocessing.connection.wait([*by_connection, self._wake_read])
            if self._closing:
                return
            for connection in ready:
                if connection == self._wake_read:
                    continue
                worker = by_connection[connection]
                try:
                    message = connection.recv()
                except (EOFError, OSError):
                    del by_connection[connection]
                    self._lost(worker)
                    continue
                self._complete(worker, message)

    def _complete(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind, chunk_id = message[0], message[1]
        with self._lock:
            job, start, stop = worker.outstanding.pop(chunk_id)
        if kind == "done":
            for name, values in (message[2] or {}).items():
                job.buffers.lists[name][start:stop] = values
            for position, payload in message[3]:
                job.fail(position, _rebuild(*payload))
            job.finish_chunk()
        else:
            _, _, position, payload = message
            job.finish_chunk(_rebuild(*payload), position)

    def _lost(self, worker: _Worker) -> None:
        worker.process.join(1.0)
        code = worker.process.exitcode
        if code is not None and code < 0:
            how = f"was killed by {signal.Signals(-code).name}"
            if -code == signal.SIGKILL:
                how += " (the kernel's out-of-memory killer sends it; check dmesg and the RAM per worker)"
        else:
            how = f"exited with code {code}"
        self._fail(worker, f"worker process {worker.process.pid} {how} while producing samples")

    def _fail(self, worker: _Worker, reason: str) -> None:
        with self._lock:
            worker.alive = False
            left = list(worker.outstanding.values())
            worker.outstanding.clear()
            if not self._closing:
                self.broken = True
        for job, start, _ in left:
            job.finish_chunk(WorkerDied(reason), start)


def _worker_main(tasks: Any, results: Any, produce: Produce, draw: Draw, parent_ends: list[Any]) -> None:
    prepare_worker()  # dies with the parent, leaves Ctrl-C to it, ends at once on SIGTERM
    for connection in parent_ends:
        connection.close()
    _single_threaded_libraries()
    maps: dict[int, Any] = {}
    while True:
        try:
            message = tasks.recv()
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "chunk":
            results.send(_run_chunk(message, maps, produce, draw))
        elif kind == "block":
            _, block_id, nbytes = message
            maps[block_id] = map_descriptor(recv_handle(tasks), nbytes)
        elif kind == "forget":
            maps.pop(message[1], None)
        elif kind == "stop":
            return


def _run_chunk(message: tuple[Any, ...], maps: dict[int, Any], produce: Produce, draw: Draw) -> tuple[Any, ...]:
    _, chunk_id, epoch, positions, indices, start, layout, list_names = message
    count = len(positions)
    arrays = {
        name: np.frombuffer(maps[block_id], np.dtype(dtype), int(np.prod(shape))).reshape(shape)[start : start + count]
        for name, block_id, shape, dtype in layout
    }
    rows = BufferSet(arrays, {name: [None] * count for name in list_names})
    job = BatchJob(0, positions, indices, rows, draw(epoch, indices), chunk=count, epoch=epoch)
    job.run(produce, 0, count)
    if job.error is not None:
        position = start + (job.error_position or 0)
        return ("error", chunk_id, position, _payload(job.error))
    failures = [(start + row, _payload(error)) for row, error in job.failures]
    return ("done", chunk_id, rows.lists or None, failures)


def _payload(error: BaseException) -> tuple[bytes | None, str, str]:
    """The error as (pickled exception or None, 'Type: message', formatted traceback with its causes)."""
    text = "".join(traceback.format_exception(error))
    try:
        pickled: bytes | None = pickle.dumps(error)
        pickle.loads(pickled)
    except Exception:  # an exception that does not survive pickling travels as text
        pickled = None
    return pickled, f"{type(error).__name__}: {error}", text


def _rebuild(pickled: bytes | None, summary: str, text: str) -> BaseException:
    error: BaseException = pickle.loads(pickled) if pickled is not None else RuntimeError(summary)
    error.__cause__ = RemoteTraceback(text)
    return error


def _single_threaded_libraries() -> None:
    """One torch thread per worker process, as the DataLoader's workers do (more would oversubscribe).

    OpenCV is left alone: ``cv2.setNumThreads`` deadlocks in a forked child once the parent has used
    OpenCV's thread pool, and OpenCV already runs single-threaded in a forked child.
    """
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
