"""stoke.format.atomic: one way to replace a file, which leaves the old file or the new one, never a part."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import stoke
from stoke.format import atomic
from stoke.format.atomic import (
    AtomicFile,
    publish,
    temporary_name,
    write_bytes_atomically,
    write_json_atomically,
    write_text_atomically,
)
from stoke.format.shard import ShardWriter
from stoke.prepare.split import make_splits
from stoke.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint


def test_the_helpers_write_whole_files_and_leave_no_temporary(tmp_path: Path) -> None:
    write_bytes_atomically(tmp_path / "a.bin", b"\x00\x01")
    write_text_atomically(tmp_path / "b.txt", "héllo\n")
    write_json_atomically(tmp_path / "c.json", {"name": "é", "values": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "héllo\n".encode()
    assert (tmp_path / "c.json").read_text(encoding="utf-8") == '{\n "name": "é",\n "values": [\n  1,\n  2\n ]\n}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.bin", "b.txt", "c.json"]


def test_a_write_that_raises_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_text_atomically(path, "old\n")
    with pytest.raises(RuntimeError, match="the writer failed"), AtomicFile(path) as stream:
        stream.write(b"half of the new fi")
        raise RuntimeError("the writer failed")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_json_that_cannot_be_written_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    write_json_atomically(path, {"ok": 1})
    with pytest.raises(ValueError):  # NaN is not JSON: refused before anything is written
        write_json_atomically(path, {"ok": float("nan")})
    assert path.read_text() == '{\n "ok": 1\n}\n' and len(list(tmp_path.iterdir())) == 1


def test_a_failed_rename_removes_the_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "data.bin"
    write_bytes_atomically(path, b"old")

    def refuse(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", refuse)
    with pytest.raises(OSError, match="No space left"):
        write_bytes_atomically(path, b"new")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["data.bin"]


def test_an_interrupt_mid_write_is_cleaned_up_too(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    with pytest.raises(KeyboardInterrupt), AtomicFile(path) as stream:
        stream.write(b"partial")
        raise KeyboardInterrupt
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_by_hand_commit_and_abort(tmp_path: Path) -> None:
    kept, dropped = AtomicFile(tmp_path / "kept"), AtomicFile(tmp_path / "dropped")
    assert kept.temporary == temporary_name(tmp_path / "kept") == tmp_path / f".kept.tmp-{os.getpid()}"
    assert kept.temporary.exists() and not kept.path.exists()  # nothing under the final name until commit
    kept.stream.write(b"whole")
    dropped.stream.write(b"part")
    assert kept.commit() == tmp_path / "kept"
    dropped.abort()
    assert (tmp_path / "kept").read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == ["kept"]


def test_publish_renames_a_finished_file(tmp_path: Path) -> None:
    temporary = tmp_path / ".x.tmp-1"
    temporary.write_bytes(b"done")
    publish(temporary, tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == b"done" and not temporary.exists()


def test_an_aborted_shard_leaves_the_previous_one(tmp_path: Path) -> None:
    path = tmp_path / "shard-000000.stk"
    first = ShardWriter(path, 1)
    first.add([b"abc"])
    info = first.commit()
    second = ShardWriter(path, 1)
    second.add([b"something else"])
    second.abort()
    assert path.stat().st_size == info.file_size and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_every_writer_of_stoke_goes_through_the_helper() -> None:
    """No module but atomic.py renames files into place itself (os.replace / os.rename)."""
    source = Path(stoke.__file__).parent
    offenders = [
        str(path.relative_to(source))
        for path in sorted(source.rglob("*.py"))
        if path.name != "atomic.py" and ("os.replace(" in path.read_text() or "os.rename(" in path.read_text())
    ]
    assert offenders == []


def test_splits_and_checkpoints_leave_no_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    stoke.pack({"y": np.arange(10)}, out, progress=False)
    make_splits(stoke.open(out), {"train": 0.8, "val": 0.2, "test": 0.0}, seed=0)
    assert stoke.open(out, split="val").indices.size == 2 and not list(out.rglob(".*.tmp-*"))
    save_checkpoint(tmp_path / "run" / "last.pt", {"format": CHECKPOINT_FORMAT, "step": 1})
    save_checkpoint(tmp_path / "run" / "last.pt", {"format": CHECKPOINT_FORMAT, "step": 2})
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["last.pt"]
