"""SIGINT or SIGTERM stops stoke within about a second, leaves no process behind, and exits 130 or 143.

Each case runs the real command (or a user's script) in a child process, waits until it is really
working (a finished shard, a marker file that a slowed step writes, a printed batch), notes the child's
own children, and sends the signal to the main process (what ``kill``, a job scheduler or a supervisor
does) or to its whole process group (a terminal's Ctrl-C). The work left at that moment takes far
longer than the bound on the time to exit, which only separates stopping from finishing the work. An
interrupted pack then resumes to the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

import stoke
from helpers import SlowRecords, running
from stoke.format.manifest import MANIFEST_NAME, PACK_STATE_DIR

TESTS = str(Path(__file__).parents[1])
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
STOPS_WITHIN_S = 4.0  # the work left when the signal comes takes 6 s or more in every case

ITEMS, SHARD_ITEMS = 400, 4  # 100 shards of 4 items at 50 ms an item: 10 s on two workers
ALLOW = {"max_quarantined": 1.0}  # SlowRecords quarantines one item in 17 on purpose
PACK_CHILD = """
import importlib, sys
sys.path.insert(0, {tests!r})
from helpers import SlowRecords
packing = importlib.import_module("stoke.pack")
pack = packing.pack
packing.pack = lambda source, out, **options: pack(SlowRecords({items}, delay=0.05), out, **options)
from stoke.cli import main
arguments = ["--shard-items", "{shard_items}", "--max-quarantined", "1", "--no-progress", *sys.argv[1:]]
main(["pack", "slow-records", {out!r}, *arguments], "stoke")
"""


class Child:
    """A command run in its own session (so a signal to its group reaches nothing else), output collected."""

    def __init__(self, script: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until(self, ready, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.process.poll() is None, f"the child ended before {what}:\n{self.output[-3000:]}"
            assert time.monotonic() < deadline, f"no {what} after {timeout:g} s:\n{self.output[-3000:]}"
            time.sleep(0.01)

    def wait_for_line(self, text: str) -> None:
        self.wait_until(lambda: any(text in line for line in self.lines), repr(text))

    def interrupt(self, signum: int, group: bool = False) -> tuple[int, float, list[psutil.Process]]:
        """Send ``signum``; (exit code, seconds to exit, the child's children just before the signal)."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        started = time.monotonic()
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=60)
        finally:
            self.kill()
        seconds = time.monotonic() - started
        self._reader.join(5)
        return code, seconds, children

    def kill(self) -> None:
        """Leave nothing behind if the child did not stop (the test then fails on its exit code)."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(5)


def assert_stopped(child: Child, code: int, seconds: float, children: list[psutil.Process], signum: int) -> None:
    assert code == EXIT_CODES[signum], child.output[-3000:]
    assert seconds < STOPS_WITHIN_S, f"took {seconds:.1f} s to stop"
    assert running(children) == [], "worker processes outlived the interrupted command"
    assert child.lines[-1] == f"stoke: error: interrupted ({signal.Signals(signum).name})", child.output[-3000:]


# ---- pack ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "ds"
    stoke.pack(SlowRecords(ITEMS), out, shard_items=SHARD_ITEMS, workers=2, progress=False, **ALLOW)
    return out


def finished_shards(out: Path) -> int:
    return len(list((out / PACK_STATE_DIR).glob("shard-*.json"))) if (out / PACK_STATE_DIR).is_dir() else 0


def assert_same_dataset(out: Path, reference: Path) -> None:
    assert (out / MANIFEST_NAME).read_bytes() == (reference / MANIFEST_NAME).read_bytes()
    assert (out / "quarantine.jsonl").read_bytes() == (reference / "quarantine.jsonl").read_bytes()
    for shard in stoke.open(reference).manifest.shards:
        assert (out / shard.file).read_bytes() == (reference / shard.file).read_bytes()
    assert sorted(os.listdir(out)) == sorted(os.listdir(reference))


@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["kill-INT", "kill-TERM", "ctrl-c"],
)
def test_an_interrupted_pack_stops_its_workers_and_resumes_to_the_same_bytes(tmp_path, reference, signum, group):
    out = tmp_path / "ds"
    child = Child(PACK_CHILD.format(tests=TESTS, items=ITEMS, out=str(out), shard_items=SHARD_ITEMS), "--workers", "2")
    child.wait_until(lambda: finished_shards(out) >= 2, "finished shard")
    code, seconds, children = child.interrupt(signum, group)
    assert len(children) >= 2  # the pool's workers were there to stop
    assert_stopped(child, code, seconds, children, signum)
    assert not (out / MANIFEST_NAME).exists()
    done = finished_shards(out)

    result = stoke.pack(
        SlowRecords(ITEMS), out, shard_items=SHARD_ITEMS, workers=2, resume=True, progress=False, **ALLOW
    )
    assert result.reused_shards == done >= 2
    assert_same_dataset(out, reference)


def test_an_interrupted_dask_pack_closes_its_cluster(tmp_path, reference):
    pytest.importorskip("distributed")
    out = tmp_path / "ds"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")])}  # for the workers
    script = PACK_CHILD.format(tests=TESTS, items=ITEMS, out=str(out), shard_items=SHARD_ITEMS)
    child = Child(script, "--engine", "dask", "--workers", "2", env=env)
    child.wait_until(lambda: finished_shards(out) >= 1, "finished shard")
    code, seconds, children = child.interrupt(signal.SIGTERM)
    assert len(children) >= 2  # the LocalCluster's processes
    assert_stopped(child, code, seconds, children, signal.SIGTERM)
    stoke.pack(SlowRecords(ITEMS), out, shard_items=SHARD_ITEMS, workers=2, resume=True, progress=False, **ALLOW)
    assert_same_dataset(out, reference)


# ---- verify -------------------------------------------------------------------------------------------
VERIFY_CHILD = """
import time
from stoke.format.fields.scalars import IntField
decode = IntField.decode
def slow_decode(self, data):
    open({marker!r}, "a").close()
    time.sleep(0.04)
    return decode(self, data)
IntField.decode = slow_decode
from stoke.cli import main
main(["verify", {dataset!r}, "--threads", "2"], "stoke")
"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_verify_stops_its_threads(tmp_path, signum):
    dataset = tmp_path / "ds"
    stoke.pack({"y": np.arange(600)}, dataset, shard_items=300, progress=False)  # two shards of 12 s each
    marker = tmp_path / "decoding"
    child = Child(VERIFY_CHILD.format(marker=str(marker), dataset=str(dataset)))
    child.wait_until(marker.exists, "sample decoded")
    code, seconds, children = child.interrupt(signum)
    assert_stopped(child, code, seconds, children, signum)


# ---- bench --------------------------------------------------------------------------------------------
BENCH_CHILD = """
import os, sys, time
import stoke.bench.run as run
def user_transform(image):
    if os.path.exists({slow!r}):  # from when the test says so, every image takes 0.2 s
        open({busy!r}, "a").close()
        time.sleep(0.2)
    return image
run.stretch_rows = user_transform
from stoke.cli import main
main(["bench", "--images", "64", "--epochs", "3", "--threads", "2", "--user-transform", *sys.argv[1:]], "stoke")
"""


@pytest.fixture(scope="module")
def bench_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-home")


@pytest.mark.parametrize(
    ("signum", "options", "after"),
    [
        # the DataLoader baseline's epoch 1 (its worker is inside a batch of 64 slow images: 13 s of work)
        (signal.SIGINT, ["--workers", "process"], "epoch 1 stoke_process"),
        # stoke's process workers' epoch 1 (one batch of 64 slow images on two workers: 6.4 s)
        (signal.SIGTERM, ["--workers", "process", "--no-baseline"], "epoch 1 ceiling"),
    ],
    ids=["SIGINT-dataloader", "SIGTERM-stoke-processes"],
)
def test_an_interrupted_bench_stops_every_worker(tmp_path, bench_home, signum, options, after):
    slow, busy = tmp_path / "slow", tmp_path / "busy"
    env = {**os.environ, "STOKE_HOME": str(bench_home)}
    child = Child(BENCH_CHILD.format(slow=str(slow), busy=str(busy)), *options, env=env)
    child.wait_for_line(after)
    slow.touch()
    child.wait_until(busy.exists, "slow image in work")
    code, seconds, children = child.interrupt(signum)
    assert len(children) >= 2  # the workers of the phase in progress were there to stop
    assert_stopped(child, code, seconds, children, signum)


# ---- a user's script ------------------------------------------------------------------------------------
LOADER_SCRIPT = """
import time
import numpy as np
import stoke

class Slow:
    def __len__(self):
        return 400
    def __getitem__(self, index):
        time.sleep(0.1)
        return {"x": np.float32(index)}

loader = stoke.Loader(Slow(), batch_size=16, shuffle=False, num_threads=2, prefetch=8, workers="process")
for batch in loader:  # 8 batches in flight: 6.4 s of work on two processes
    print("batch", flush=True)
"""


def test_ctrl_c_in_a_script_iterating_a_process_loader_exits_at_once():
    child = Child(LOADER_SCRIPT)
    child.wait_for_line("batch")
    code, seconds, children = child.interrupt(signal.SIGINT, group=True)
    assert len(children) == 2
    assert code == -signal.SIGINT and "KeyboardInterrupt" in child.output  # Python's own ending, unchanged
    assert seconds < STOPS_WITHIN_S, f"took {seconds:.1f} s to stop"
    assert running(children) == []


def test_sigterm_to_a_script_iterating_a_process_loader_leaves_no_orphan():
    child = Child(LOADER_SCRIPT)
    child.wait_for_line("batch")
    code, _, children = child.interrupt(signal.SIGTERM)
    assert len(children) == 2
    assert code == -signal.SIGTERM  # the library installs no handler: SIGTERM ends the script as it always does
    assert running(children) == []  # the workers die with their parent (PR_SET_PDEATHSIG)
