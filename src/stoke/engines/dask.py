"""The Dask engine: run pack tasks on a Dask distributed cluster, or on a ``LocalCluster`` started for the pack.

Same contract as :func:`stoke.engines.local.run_tasks`: ``work(task, advance)`` for every task, results in
task order. Each task is submitted with ``retries=``, so a task that raises is run again (on any worker),
and a task whose worker dies is rescheduled by Dask itself. A task that still fails raises one
:class:`~stoke.errors.PackError` naming the task and the worker's error; the tasks not yet started are
cancelled. The work function (for packing: the source, schema, plan and output directory) is sent to the
workers once, not once per task.

Workers write their shards straight into the output directory, so on a real cluster every worker must
see that directory at the same path (NFS, Lustre, a mounted bucket). Before any task runs, every worker
is asked to read a token the driver wrote there and to create a file beside it; a worker that cannot is
named in a clear error. Workers that join after that check are not probed.

Interrupted (Ctrl-C, or SIGTERM through the ``stoke`` command), the driver cancels the tasks not finished
and closes what it opened: the client, and a ``LocalCluster`` started for the pack with all its processes
(a cluster given by ``client`` or ``scheduler`` is left running). Finished shards stay for ``--resume``.

Not for: choosing shards, writing the manifest or resuming (the driver in ``stoke.pack`` does that), nor
for per-item progress (the bar advances by whole tasks as they finish).

A script that packs with a ``LocalCluster`` needs the usual ``if __name__ == "__main__":`` guard: its
workers are spawned processes, which import the main module.

Example:
    >>> from distributed import Client
    >>> with Client(processes=False, n_workers=1, dashboard_address=None) as client:
    ...     run_tasks_dask([2, 0, 1], lambda task, advance: task * 10, total=0, progress=False, client=client)
    [20, 0, 10]
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from stoke.errors import ConfigError, PackError
from stoke.extras import require

T = TypeVar("T")
Task = Callable[[int, Callable[[int], None]], T]

PROBE_PREFIX = ".stoke-probe-"
CONNECT_TIMEOUT_S = 30


def run_tasks_dask(
    tasks: Sequence[int],
    work: Task[T],
    total: int,
    progress: bool,
    *,
    client: Any | None = None,
    scheduler: str | None = None,
    workers: int = 1,
    retries: int = 2,
    task_items: Sequence[int] | None = None,
    output_dir: Path | None = None,
    describe: Callable[[int], str] = "task {}".format,
    description: str = "packing",
) -> list[T]:
    """Run ``work(task, advance)`` for every task on Dask; results in task order.

    ``client`` is a connected ``distributed.Client`` to use (left open); otherwise ``scheduler`` is the
    address of a running scheduler, or, when it is None, a ``LocalCluster`` of ``workers`` single-threaded
    processes is started and closed after. ``task_items[i]`` is how far the progress bar (sized ``total``)
    advances when ``tasks[i]`` finishes. ``output_dir``, when given, is checked to be visible and writable
    from every worker before any task runs. ``describe(task)`` names a task in error messages.
    """
    if retries < 0:
        raise ConfigError(f"retries must be at least 0, got {retries}")
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    if task_items is not None and len(task_items) != len(tasks):
        raise ConfigError(f"task_items has {len(task_items)} entries for {len(tasks)} tasks")
    if not tasks:
        return []
    advances = dict(zip(tasks, task_items)) if task_items is not None else dict.fromkeys(tasks, 1)
    bar = tqdm(total=total, desc=description, unit="item", disable=not progress or None, dynamic_ncols=True)
    try:
        with _connected(client, scheduler, min(workers, len(tasks))) as connected:
            if output_dir is not None:
                check_workers_see(connected, Path(output_dir))
            return _run(connected, tasks, work, retries, advances, bar, describe)
    finally:
        bar.close()


def _run(
    client: Any,
    tasks: Sequence[int],
    work: Task[T],
    retries: int,
    advances: dict[int, int],
    bar: tqdm,
    describe: Callable[[int], str],
) -> list[T]:
    from distributed import as_completed

    # Broadcast, so that a worker that dies does not take the only copy of the work function with it.
    shared_work = client.scatter(work, broadcast=True, hash=False)
    run_id = uuid.uuid4().hex[:8]

    def submit(task: int, attempt: int) -> Any:
        key = f"stoke-task-{task}-{run_id}-{attempt}"
        return client.submit(_run_one, shared_work, task, key=key, retries=retries, pure=False)

    futures = [submit(task, 0) for task in tasks]
    task_of = {future.key: task for future, task in zip(futures, tasks)}
    resubmitted = dict.fromkeys(tasks, 0)
    results: dict[int, T] = {}
    try:
        pending = as_completed(futures)
        for future in pending:
            task = task_of[future.key]
            if future.status == "finished":
                results[task] = future.result()
                bar.update(advances[task])
                continue
            if future.status == "error":
                error = future.exception()
                raise PackError(_failure_message(describe(task), retries, error)) from error
            # Lost, not failed: the cluster lost the worker running it or the data it needed (a busy or
            # restarting cluster). Shards are written atomically, so running the task again is safe.
            resubmitted[task] += 1
            if resubmitted[task] > retries:
                raise PackError(_failure_message(describe(task), retries, None))
            if shared_work.status != "finished":
                shared_work = client.scatter(work, broadcast=True, hash=False)
            again = submit(task, resubmitted[task])
            task_of[again.key] = task
            futures.append(again)
            pending.add(again)
    finally:
        client.cancel([future for future in futures if not future.done()] + [shared_work])
    return [results[task] for task in tasks]


def _failure_message(name: str, retries: int, error: BaseException | None) -> str:
    attempts = f"{retries + 1} attempt{'s' if retries else ''}"
    if error is None:
        cause = "its result was lost (the cluster cancelled it or lost its workers)"
    elif isinstance(error, WorkerTaskError):
        cause = str(error)
    else:
        cause = f"{type(error).__name__}: {error}"
    return (
        f"{name} failed on the Dask cluster after {attempts}: {cause}; fix the cause and continue the pack with "
        f"--resume (finished shards are kept)"
    )


class WorkerTaskError(Exception):
    """A task's error as raised on a worker, with the worker's address and host in the message."""


def _run_one(work: Task[T], task: int) -> T:
    try:
        return work(task, _ignore_progress)
    except Exception as error:
        raise WorkerTaskError(f"{type(error).__name__}: {error} (on worker {_worker_name()})") from error


def _ignore_progress(count: int) -> None:
    """Items are counted when a task finishes; per-item updates would cost a message each."""


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return f"{get_worker().address}, host {os.uname().nodename}"
    except (ImportError, ValueError):
        return f"host {os.uname().nodename}"


def check_workers_see(client: Any, directory: Path) -> None:
    """Raise PackError unless every worker of ``client`` can read a token written in ``directory`` and write there."""
    token = uuid.uuid4().hex
    probe = directory / f"{PROBE_PREFIX}{token}"
    probe.write_text(token, encoding="utf-8")
    try:
        answers = client.run(_probe_directory, str(probe), token)
    finally:
        probe.unlink(missing_ok=True)
    for address, problem in sorted(answers.items()):
        if problem is not None:
            raise PackError(
                f"the Dask worker {address} cannot use the output directory {directory}: {problem}; every worker "
                f"must see it at the same path, on a filesystem shared with this machine (NFS, Lustre, a mount)"
            )


def _probe_directory(probe: str, token: str) -> str | None:
    """On a worker: None when ``probe`` holds ``token`` and a file can be created beside it, else the problem."""
    path = Path(probe)
    try:
        if path.read_text(encoding="utf-8") != token:
            return f"{path.name} there holds something else (another machine's directory at the same path?)"
    except OSError as error:
        return f"it cannot read {path.name}, which this machine wrote there ({error.strerror or error})"
    answer = path.with_name(f"{path.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    try:
        answer.write_bytes(b"")
        answer.unlink()
    except OSError as error:
        return f"it cannot write there ({error.strerror or error})"
    return None


@contextmanager
def _connected(client: Any | None, scheduler: str | None, workers: int) -> Iterator[Any]:
    """The client to use: the caller's, one connected to ``scheduler``, or one on a fresh LocalCluster."""
    if client is not None:
        yield client
        return
    require("distributed", extra="dask", what="packing with engine='dask' (stoke pack --engine dask)")
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            connected = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
        except (OSError, TimeoutError, ValueError) as error:
            raise PackError(
                f"cannot reach the Dask scheduler at {scheduler} ({error}); check the address, or leave out "
                f"--scheduler to pack on a LocalCluster on this machine"
            ) from None
        try:
            _wait_for_workers(connected, scheduler)
            yield connected
        finally:
            connected.close()
        return
    with _quiet_distributed_logs():
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address="127.0.0.1:0",  # its HTTP server, on a free port of this machine only
            scheduler_kwargs={"dashboard": False},
            silence_logs=logging.ERROR,
        )
        try:
            with Client(cluster) as connected:
                yield connected
        finally:
            cluster.close()


@contextmanager
def _quiet_distributed_logs() -> Iterator[None]:
    """Keep the scheduler's and nannies' INFO lines (start, stop, restarts) off the pack's terminal."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _wait_for_workers(client: Any, scheduler: str) -> None:
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise PackError(
            f"the Dask scheduler at {scheduler} has no workers after {CONNECT_TIMEOUT_S} s; start some with "
            f"`dask worker {scheduler}`"
        ) from None
