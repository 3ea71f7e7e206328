"""A shard truncated in place while it is mapped: an error naming it, never a process killed by SIGBUS.

Decoders read the mapped pages directly, so a page past the new end of file used to end the process with
SIGBUS (``rsync --inplace``, ``cp`` over a shard, a change on an NFS server). Each scenario below runs in a
subprocess (``run``), so a regression kills only that process and the test fails on its exit code. The
scenarios run with the SIGBUS guard (``stoke/format/_mapguard.c``) and with the pure-Python fallback
(``STOKE_MAPGUARD=off``: each shard's size checked before each read).
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from PIL import Image

import stoke
from helpers import photo
from stoke.errors import SampleError
from stoke.format import mapguard
from stoke.format.fields import ImageField, IntField, NDArrayField
from stoke.format.shard import ShardReader
from stoke.ops import Map, Resize

HERE = Path(__file__).resolve().parent
COMPILED = importlib.util.find_spec("stoke.format._mapguard") is not None
MODES = [
    pytest.param(True, id="guard", marks=pytest.mark.skipif(not COMPILED, reason="stoke's _mapguard is not compiled")),
    pytest.param(False, id="fallback"),
]
CUT_SHARD = 1  # the shard truncated in every scenario
SHARD_FILE = "shard-000001.stk"
SAMPLES, PER_SHARD = 16, 4
TRANSFORMS = {"raw": [Resize((32, 32))], "jpeg": [Resize((32, 32))]}


# ---- the scenarios (run in a subprocess; each returns what the test checks, as JSON) ------------------
def pack_dataset(out: str) -> None:
    """Raw pixels, a JPEG, an ndarray and a label per sample, 4 samples a shard."""
    items = [
        {
            "raw": Image.fromarray(photo(48, 64, seed=index)),
            "jpeg": Image.fromarray(photo(48, 64, seed=100 + index)),
            "x": np.linspace(index, index + 1, 300, dtype=np.float32),
            "label": index,
        }
        for index in range(SAMPLES)
    ]
    fields = {
        "raw": ImageField(encoding="raw"),
        "jpeg": ImageField(encoding="jpeg"),
        "x": NDArrayField(np.dtype(np.float32), (300,)),
        "label": IntField(),
    }
    stoke.pack(items, out, fields=fields, shard_items=PER_SHARD, workers=1, progress=False)


def digest(*values: Any) -> str:
    hasher = xxhash.xxh3_64()
    for value in values:
        hasher.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    return hasher.hexdigest()


def truncate(root: str, size: int | None = None) -> None:
    """Cut the shard in place (as ``rsync --inplace`` or ``cp`` over it does), to half its size by default."""
    path = os.path.join(root, SHARD_FILE)
    os.truncate(path, os.path.getsize(path) // 2 if size is None else size)


def getitem_after_truncation(root: str) -> dict[str, Any]:
    dataset = stoke.open(root)
    before = [digest(*dataset[index].values()) for index in range(len(dataset))]  # maps every shard
    truncate(root)
    outcome: dict[int, Any] = {}
    for index in range(len(dataset)):
        try:
            outcome[index] = digest(*dataset[index].values()) == before[index]
        except SampleError as error:
            outcome[index] = str(error)
    return {"outcome": outcome, "guarded": mapguard.available()}


def epoch(loader: stoke.Loader) -> dict[int, str]:
    """Each delivered sample's digest, by dataset index."""
    rows = {}
    for batch in loader:
        for row, index in enumerate(batch["index"].tolist()):
            rows[index] = digest(batch["raw"][row], batch["jpeg"][row], batch["x"][row], batch["label"][row])
    return rows


def loader_after_truncation(root: str, workers: str) -> dict[str, Any]:
    results = {}
    for verify in ("always", "once", "never"):
        copy = shutil.copytree(root, tempfile.mkdtemp() + "/ds")
        dataset = stoke.open(copy)
        for index in range(len(dataset)):  # every shard mapped before process workers fork: they inherit them
            dataset[index]
        loader = stoke.Loader(
            dataset, batch_size=4, verify=verify, workers=workers, num_threads=2, on_error="skip", transforms=TRANSFORMS
        )
        first = epoch(loader)
        truncate(copy)
        second = epoch(loader)
        results[verify] = {
            "first": sorted(first),
            "delivered": sorted(second),
            "identical": all(second[index] == first[index] for index in second),
            "quarantine": [[record["index"], record["reason"]] for record in loader.quarantine],
        }
        loader.close()
    return results


def loader_truncated_mid_sample(root: str, workers: str) -> dict[str, Any]:
    """A truncation racing the read itself: a transform on the first field cuts the shard while the same
    sample's other fields are still to be read (sample 4, the first of the order, opens the cut shard)."""
    armed = os.path.join(root, "armed")

    def cut_once(pixels: np.ndarray) -> np.ndarray:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(armed)  # only the first sample after arming: unlink succeeds once, across processes
            truncate(root, size=4096)  # the first page stays: the raw image's first bytes, read already
        return pixels

    dataset = stoke.open(root)
    order = dataset.select([4, 5, 6, 7, 0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15])
    for index in range(len(dataset)):
        dataset[index]
    transforms = {**TRANSFORMS, "raw": [Resize((32, 32)), Map(cut_once)]}
    loader = stoke.Loader(
        order, batch_size=4, verify="never", workers=workers, num_threads=1, on_error="skip", transforms=transforms
    )
    first = epoch(loader)
    Path(armed).touch()
    second = epoch(loader)
    return {
        "delivered": sorted(second),
        "identical": all(second[index] == first[index] for index in second),
        "quarantine": [[record["index"], record["reason"]] for record in loader.quarantine],
    }


def verify_truncated_midway(root: str) -> dict[str, Any]:
    """``stoke verify`` on a shard cut after its file checksum was taken, while its samples are checked."""
    import stoke.verify
    from stoke.cli import main

    original = stoke.verify.file_checksum

    def checksum_then_truncate(path: Path) -> str:
        checksum = original(path)
        if path.name == SHARD_FILE:
            truncate(root)
        return checksum

    stoke.verify.file_checksum = checksum_then_truncate
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        try:
            main(["verify", "--json", "--threads", "2", root])
        except SystemExit as exit:
            code = exit.code
    return {"exit": code, "report": json.loads(output.getvalue())}


def crash_outside_shards(how: str) -> None:
    """A SIGBUS that is not a guarded shard's must still end the process (through faulthandler's report
    when it is enabled): a file stoke did not map, truncated under Python's own mmap, or a signal sent."""
    import mmap

    root = tempfile.mkdtemp()
    pack_dataset(root + "/ds")
    stoke.open(root + "/ds")[0]  # a shard mapped: the handler is installed
    print(json.dumps({"handler": mapguard._mapguard.handler_state() if mapguard.available() else None}), flush=True)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGBUS)
    else:
        path = root + "/other.bin"
        Path(path).write_bytes(bytes(3 * 4096))
        with open(path, "rb") as stream:
            other = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
        os.truncate(path, 0)
        other[2 * 4096]
    print(json.dumps({"survived": True}), flush=True)


def run(scenario: str, *args: Any, guard: bool = True, faulthandler: bool = False) -> subprocess.CompletedProcess:
    """Run ``scenario(*args)`` of this module in a fresh interpreter; its JSON result is the last stdout line."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), env.get("PYTHONPATH", "")])
    env.pop("STOKE_MAPGUARD", None)
    if not guard:
        env["STOKE_MAPGUARD"] = "off"
    code = f"import json, test_truncated_shard as case; print(json.dumps(case.{scenario}(*{args!r})))"
    flags = ["-X", "faulthandler"] if faulthandler else []
    return subprocess.run([sys.executable, *flags, "-c", code], env=env, capture_output=True, text=True, timeout=180)


def result(completed: subprocess.CompletedProcess) -> Any:
    assert completed.returncode != -signal.SIGBUS, f"killed by SIGBUS:\n{completed.stderr[-4000:]}"
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("truncated") / "ds"
    pack_dataset(str(root))
    return root


@pytest.fixture
def dataset_copy(packed: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(packed, tmp_path / "ds"))


def lost_indices() -> list[int]:
    return list(range(CUT_SHARD * PER_SHARD, (CUT_SHARD + 1) * PER_SHARD))


def names_the_cut(reason: str) -> bool:
    return SHARD_FILE in reason and "truncated to" in reason and "restore the file" in reason


# ---- the tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("guard", MODES)
def test_getitem_on_a_truncated_shard_raises_naming_it(dataset_copy, guard):
    found = result(run("getitem_after_truncation", str(dataset_copy), guard=guard))
    assert found["guarded"] is guard
    outcome = {int(index): value for index, value in found["outcome"].items()}
    for index in lost_indices():  # its offset table, at the end of the file, is gone: every sample is lost
        assert isinstance(outcome[index], str) and names_the_cut(outcome[index]), outcome[index]
        assert f"sample {index} in " in outcome[index]
    assert all(outcome[index] is True for index in outcome if index not in lost_indices())  # the rest: identical


@pytest.mark.parametrize(("workers", "guard"), [("thread", True), ("process", True), ("thread", False)])
def test_loader_quarantines_the_samples_of_a_truncated_shard(dataset_copy, workers, guard):
    if guard and not COMPILED:
        pytest.skip("stoke's _mapguard is not compiled")
    found = result(run("loader_after_truncation", str(dataset_copy), workers, guard=guard))
    for verify, outcome in found.items():
        assert outcome["first"] == list(range(SAMPLES)), verify
        assert outcome["delivered"] == [i for i in range(SAMPLES) if i not in lost_indices()], verify
        assert outcome["identical"], verify
        assert sorted(index for index, _ in outcome["quarantine"]) == lost_indices(), verify
        assert all(names_the_cut(reason) for _, reason in outcome["quarantine"]), (verify, outcome["quarantine"])


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_guard_catches_a_truncation_racing_the_read(dataset_copy, workers):
    if not COMPILED:
        pytest.skip("stoke's _mapguard is not compiled")
    found = result(run("loader_truncated_mid_sample", str(dataset_copy), workers))
    assert found["delivered"] == [i for i in range(SAMPLES) if i not in lost_indices()]
    assert found["identical"]
    assert sorted(index for index, _ in found["quarantine"]) == lost_indices()
    assert all(names_the_cut(reason) for _, reason in found["quarantine"]), found["quarantine"]


def test_without_the_guard_a_truncation_racing_the_read_still_kills(dataset_copy):
    # The limit docs/guarantees.md states for installs without a C compiler: the size is checked before
    # each read, so a cut between that check and the decoder's read is not caught.
    completed = run("loader_truncated_mid_sample", str(dataset_copy), "thread", guard=False)
    assert completed.returncode == -signal.SIGBUS, completed.stderr[-2000:]


@pytest.mark.parametrize("guard", MODES)
def test_verify_names_a_shard_truncated_while_checked(dataset_copy, guard):
    found = result(run("verify_truncated_midway", str(dataset_copy), guard=guard))
    assert found["exit"] == 1
    report = found["report"]
    assert not report["ok"]
    assert sorted(entry["index"] for entry in report["damaged"]) == lost_indices()
    assert {entry["shard"] for entry in report["damaged"]} == {SHARD_FILE}
    assert {problem["shard"] for problem in report["shard_problems"]} == {SHARD_FILE}
    assert any(names_the_cut(problem["reason"]) for problem in report["shard_problems"]), report["shard_problems"]


@pytest.mark.skipif(not COMPILED, reason="stoke's _mapguard is not compiled")
@pytest.mark.parametrize("how", ["other-mapping", "kill"])
@pytest.mark.parametrize("faulthandler", [False, True], ids=["plain", "faulthandler"])
def test_other_sigbus_still_ends_the_process(how, faulthandler):
    completed = run("crash_outside_shards", how, faulthandler=faulthandler)
    assert json.loads(completed.stdout.splitlines()[0]) == {"handler": "stoke"}  # the guard was in place
    assert completed.returncode == -signal.SIGBUS, completed.stderr[-2000:]
    assert "survived" not in completed.stdout
    if faulthandler:  # faulthandler, installed before stoke's handler, still reports the crash
        assert "Fatal Python error: Bus error" in completed.stderr


# ---- in this process: no truncation, so no SIGBUS is possible -------------------------------------------
def test_a_shard_changed_in_place_without_shrinking_is_caught_by_checksums(dataset_copy):
    dataset = stoke.open(dataset_copy)
    loader = stoke.Loader(dataset, batch_size=4, verify="always", on_error="skip", transforms=TRANSFORMS)
    first = epoch(loader)
    reader = dataset.shard_reader(CUT_SHARD)
    start = int(reader.offsets[2 * len(dataset.fields)])  # sample 6 (the third of the shard), its first field
    path = dataset_copy / SHARD_FILE
    with open(path, "r+b") as stream:  # a rewrite in place that grows the file and changes one sample
        stream.seek(64 + start + 100)
        stream.write(b"\x00\x01\x02\x03")
        stream.seek(0, os.SEEK_END)
        stream.write(bytes(10_000))
    second = epoch(loader)
    assert sorted(second) == [index for index in range(SAMPLES) if index != 6]
    assert all(second[index] == first[index] for index in second)
    [record] = loader.quarantine
    assert record["index"] == 6 and SHARD_FILE in record["reason"] and "checksum" in record["reason"]


def test_a_shard_replaced_by_rename_keeps_its_old_bytes(dataset_copy):
    # cp to a temporary name and rename: the mapping keeps the old inode, so the old samples, intact.
    dataset = stoke.open(dataset_copy)
    before = [digest(*dataset[index].values()) for index in range(SAMPLES)]
    path = dataset_copy / SHARD_FILE
    replacement = path.with_suffix(".new")
    replacement.write_bytes(bytes(100))
    os.replace(replacement, path)
    assert [digest(*dataset[index].values()) for index in range(SAMPLES)] == before


@pytest.mark.skipif(not COMPILED, reason="stoke's _mapguard is not compiled")
def test_a_closed_shard_is_no_longer_guarded(packed):
    dataset = stoke.open(packed)
    entry = dataset.manifest.shards[0]
    reader = ShardReader(packed / entry.file, len(dataset.fields), entry.num_samples, entry.file_size)
    assert reader._guard.guarded
    reader.close()
    assert not reader._guard.release.alive  # unregistered once unmapped

    held = ShardReader(packed / entry.file, len(dataset.fields), entry.num_samples, entry.file_size)
    view = held.record(0)
    held.close()  # a view still holds the mapping: it stays mapped, so it stays guarded
    release = held._guard.release
    assert release.alive
    del view, held
    gc.collect()
    assert not release.alive  # unregistered when the mapping was freed
