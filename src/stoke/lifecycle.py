"""How stoke's processes end: on SIGINT or SIGTERM, with their parent, or when their work is abandoned.

For:

* **The ``stoke`` command's own process.** :func:`sigterm_raises` makes SIGTERM (what ``kill``, a job
  scheduler or a supervisor sends) raise :class:`Terminated`, a ``KeyboardInterrupt``, so SIGINT and
  SIGTERM take the same clean-up path: the command stops its workers, then exits 130 (SIGINT) or 143
  (SIGTERM), the shell's codes for death by those signals (:func:`interruption`).
* **Every worker process stoke starts** (pack workers, the Loader's process workers, the bench
  baseline's DataLoader workers). :func:`prepare_worker` runs first in each: the kernel kills the worker
  when its parent dies (``PR_SET_PDEATHSIG``, Linux), Ctrl-C (which a terminal sends to the whole
  process group) is left to the parent, and SIGTERM ends the worker at once, whatever handler it
  inherited from the parent it was forked from.
* **Stopping worker processes now** (:func:`stop_processes`): work being abandoned is not finished
  first. Everything stoke's workers write is written under a temporary name and renamed when whole,
  or is memory the parent throws away, so killing them is safe.
* **Waiting in the main thread so that an interruption stays clean** (:func:`completed`): Python raises
  ``KeyboardInterrupt`` between any two bytecodes of the main thread, and one raised inside
  ``threading.Condition.wait`` (under ``concurrent.futures.wait``, ``Event.wait``) can leave the
  condition's lock released: the interruption then surfaces as ``RuntimeError: release unlocked lock``.

Not for: signal handlers in a user's process. A library must not install them: a user's script keeps
Python's defaults (Ctrl-C raises ``KeyboardInterrupt`` and the Loader's workers stop when it is closed
or at exit; SIGTERM ends the process, and its workers die with it).

Example:
    >>> with sigterm_raises():
    ...     try:
    ...         os.kill(os.getpid(), signal.SIGTERM)
    ...         time.sleep(5)  # the handler raises before this ends
    ...     except KeyboardInterrupt as error:
    ...         interruption(error)
    ('SIGTERM', 143)
    >>> interruption(KeyboardInterrupt())
    ('SIGINT', 130)
    >>> from concurrent.futures import ThreadPoolExecutor
    >>> with ThreadPoolExecutor(2) as pool:
    ...     futures = [pool.submit(pow, 2, n) for n in range(4)]
    ...     sorted(future.result() for finished in completed(futures, tick=0.1) for future in finished)
    [1, 2, 4, 8]
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from typing import Any

SIGINT_EXIT = 128 + signal.SIGINT  # 130: what a shell reports for a process killed by SIGINT
SIGTERM_EXIT = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (raised by the handler :func:`sigterm_raises` installs); clean up as for Ctrl-C."""

    signal_name = "SIGTERM"
    exit_code = SIGTERM_EXIT


def interruption(error: KeyboardInterrupt) -> tuple[str, int]:
    """(the signal's name, the exit code) for an interruption: ``Terminated`` is SIGTERM, else SIGINT."""
    if isinstance(error, Terminated):
        return error.signal_name, error.exit_code
    return "SIGINT", SIGINT_EXIT


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`Terminated` in the main thread; the previous handler
    comes back after. Only the ``stoke`` command uses this, for its own process; off the main thread
    (where Python cannot set handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def prepare_worker() -> None:
    """First thing in a worker process: die with the parent, leave Ctrl-C to it, end at once on SIGTERM."""
    die_with_parent()
    # A terminal's Ctrl-C reaches the whole process group; the parent decides what stops, and how.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A forked worker inherits its parent's Python handlers (the stoke command's, or a user's that saves a
    # checkpoint): a worker told to stop must stop, not run the parent's clean-up.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the process that started it dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def stop_processes(processes: Iterable[Any], grace: float = 0.5) -> None:
    """Stop ``multiprocessing.Process`` objects now and reap them: SIGTERM, then SIGKILL for any still
    running after ``grace`` seconds. Processes that already ended are only reaped."""
    processes = list(processes)
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # ended, closed or never started
            if process.is_alive():
                process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AssertionError, AttributeError):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1.0)


def completed(futures: Iterable[Future], tick: float = 0.25) -> Iterator[list[Future]]:
    """The futures that completed since the last step (none, at the latest after ``tick`` seconds), until
    all have: for a loop that also updates a progress bar.

    It waits on a ``queue.SimpleQueue`` that the futures' done-callbacks feed, rather than on
    ``concurrent.futures.wait``: the queue waits in C, so an interruption leaves no lock behind (see the
    module docstring).
    """
    finished: queue.SimpleQueue[Future] = queue.SimpleQueue()
    left = 0
    for future in futures:
        future.add_done_callback(finished.put)
        left += 1
    while left:
        batch: list[Future] = []
        with contextlib.suppress(queue.Empty):
            batch.append(finished.get(timeout=tick))
            while True:
                batch.append(finished.get_nowait())
        left -= len(batch)
        yield batch
