"""The CLI: the API behind one-line errors and exit codes; JSON output for scripts."""

from __future__ import annotations

import json
import subprocess
import sys

import stoke


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "stoke", *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_pack_then_inspect(tmp_path, image_folder):
    packed = run_cli("pack", str(image_folder), str(tmp_path / "ds"), "--json", "--max-side", "32", "--workers", "2")
    assert packed.returncode == 0, packed.stderr
    result = json.loads(packed.stdout)
    assert result["num_samples"] == 12 and result["num_quarantined"] == 0
    inspected = run_cli("inspect", str(tmp_path / "ds"), "--json")
    summary = json.loads(inspected.stdout)
    assert summary["num_samples"] == 12 and summary["num_quarantined"] == 0 and summary["num_shards"] >= 1
    assert [field["name"] for field in summary["fields"]] == ["image", "label", "path"]
    assert summary["fields"][1]["classes"] == ["class_0", "class_1"]
    assert summary["total_bytes"] == sum(shard.file_size for shard in stoke.open(tmp_path / "ds").manifest.shards)
    text = run_cli("inspect", str(tmp_path / "ds"))
    assert "samples      12" in text.stdout and "2 classes: class_0, class_1" in text.stdout


def test_errors_are_one_line_and_an_exit_code(tmp_path, image_folder):
    cases = [
        (("inspect", str(tmp_path / "missing")), 2, "does not exist"),
        (("verify", str(tmp_path)), 2, "not a stoke dataset"),
        (("pack", str(tmp_path / "nothing"), str(tmp_path / "out")), 2, "does not exist"),
        (("pack", str(image_folder), str(image_folder)), 2, "not empty"),
    ]
    for args, code, message in cases:
        completed = run_cli(*args)
        assert completed.returncode == code, completed
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("stoke: error: ") and message in lines[0], completed.stderr
        assert "Traceback" not in completed.stderr


def test_damaged_manifest_is_one_sentence(tmp_path):
    stoke.pack([{"y": 1}], tmp_path / "ds", progress=False)
    (tmp_path / "ds" / "manifest.json").write_text('{"format": "stoke", "format_version": 2}')
    completed = run_cli("inspect", str(tmp_path / "ds"))
    assert completed.returncode == 2
    assert "format version 2" in completed.stderr and "upgrade stoke" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_bad_option_values_are_usage_errors(tmp_path, image_folder):
    completed = run_cli("pack", str(image_folder), str(tmp_path / "ds"), "--shard-size", "lots")
    assert completed.returncode == 2 and "not a size" in completed.stderr and "Traceback" not in completed.stderr
