"""stoke verify: finds every kind of damage, names the samples, and exits 1."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

import stoke
from stoke.format.shard import DATA_START
from stoke.verify import verify


@pytest.fixture
def packed(tmp_path, image_folder):
    stoke.pack(image_folder, tmp_path / "ds", shard_items=5, progress=False)
    return tmp_path / "ds"


def flip(path, position):
    raw = bytearray(path.read_bytes())
    raw[position] ^= 0x5A
    path.write_bytes(bytes(raw))


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "stoke", *args], capture_output=True, text=True, timeout=120)


def test_intact_dataset(packed):
    report = verify(packed)
    assert report.ok and report.num_samples == 12
    completed = run_cli("verify", str(packed))
    assert completed.returncode == 0 and "all 12 samples" in completed.stdout


def test_a_flipped_byte_is_found_and_named(packed):
    dataset = stoke.open(packed)
    shard = dataset.manifest.shards[1]
    reader = dataset.shard_reader(1)
    start = int(reader.offsets[2 * 3])  # sample 2 of shard 1, first field (the JPEG)
    dataset.close()
    flip(packed / shard.file, DATA_START + start + 200)
    completed = run_cli("verify", str(packed), "--json")
    assert completed.returncode == 1
    report = json.loads(completed.stdout)
    assert not report["ok"]
    assert [entry["index"] for entry in report["damaged"]] == [5 + 2]
    assert report["damaged"][0]["shard"] == shard.file
    assert report["shard_problems"] == [
        {"shard": shard.file, "reason": "the file's checksum differs from the manifest's"}
    ]
    text = run_cli("verify", str(packed))
    assert text.returncode == 1 and "sample 7 (shard-000001.stk)" in text.stdout


def test_damage_outside_samples_is_reported_for_the_shard(packed):
    shard = stoke.open(packed).manifest.shards[0]
    flip(packed / shard.file, 3)  # the magic number in the header
    report = verify(packed)
    assert report.damaged == []
    assert {problem["reason"] for problem in report.shard_problems} >= {
        "the file's checksum differs from the manifest's"
    }
    assert any("header is damaged" in problem["reason"] for problem in report.shard_problems)


def test_a_truncated_shard_damages_all_its_samples(packed):
    shard = stoke.open(packed).manifest.shards[2]
    path = packed / shard.file
    path.write_bytes(path.read_bytes()[:-10])
    report = verify(packed)
    assert report.damaged_indices == [10, 11]
    assert "truncated" in report.shard_problems[0]["reason"]


def stderr_on_a_terminal(*args: str) -> str:
    """What ``stoke ARGS`` writes to stderr when stderr is a terminal (a pseudo-terminal, 100 columns)."""
    terminal, child_end = pty.openpty()
    fcntl.ioctl(child_end, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "stoke", *args], stdout=subprocess.PIPE, stderr=child_end)
    os.close(child_end)
    written = b""
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # EIO: the command ended and closed the terminal
            break
        if not chunk:
            break
        written += chunk
    os.close(terminal)
    process.communicate(timeout=120)
    return written.decode(errors="replace")


def test_a_progress_bar_of_samples_on_a_terminal_only(packed):
    shown = stderr_on_a_terminal("verify", str(packed))
    assert "verifying" in shown and "12/12" in shown
    assert stderr_on_a_terminal("verify", str(packed), "--no-progress") == ""
    assert stderr_on_a_terminal("verify", str(packed), "--json") == ""
    assert run_cli("verify", str(packed)).stderr == ""  # not a terminal
