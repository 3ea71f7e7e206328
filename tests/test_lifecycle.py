"""stoke.lifecycle: SIGTERM as an interruption in the stoke command, and how worker processes end."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from stoke.lifecycle import Terminated, interruption, prepare_worker, sigterm_raises, stop_processes

fork = multiprocessing.get_context("fork")


def test_sigterm_raises_only_inside_the_block_and_the_previous_handler_comes_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as raised, sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert isinstance(raised.value, KeyboardInterrupt)  # every `except KeyboardInterrupt` clean-up runs
    assert interruption(raised.value) == ("SIGTERM", 143)
    assert signal.getsignal(signal.SIGTERM) is before


def report_dispositions(answers) -> None:
    prepare_worker()
    answers.send((signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)))
    time.sleep(30)


def test_a_worker_ignores_ctrl_c_and_ends_on_sigterm_whatever_handler_it_inherited():
    answers, sender = fork.Pipe(duplex=False)
    with sigterm_raises():  # the parent's handler, inherited by the fork
        worker = fork.Process(target=report_dispositions, args=(sender,), daemon=True)
        worker.start()
    assert answers.recv() == (signal.SIG_IGN, signal.SIG_DFL)
    os.kill(worker.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    worker.terminate()
    worker.join(5)
    assert worker.exitcode == -signal.SIGTERM  # ended by the signal, not by the parent's clean-up


def ignore_sigterm(ready) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(30)


def test_stop_processes_kills_what_sigterm_does_not_end_and_reaps_everything():
    ready = fork.Event()
    stubborn = fork.Process(target=ignore_sigterm, args=(ready,), daemon=True)
    polite = fork.Process(target=time.sleep, args=(30,), daemon=True)
    finished = fork.Process(target=time.sleep, args=(0,), daemon=True)
    for process in (stubborn, polite, finished):
        process.start()
    finished.join(5)
    assert ready.wait(5)
    started = time.monotonic()
    stop_processes([stubborn, polite, finished], grace=0.3)
    assert time.monotonic() - started < 2.0
    assert (stubborn.exitcode, polite.exitcode, finished.exitcode) == (-signal.SIGKILL, -signal.SIGTERM, 0)
