"""The CLI: the API behind one-line errors and exit codes; JSON output for scripts."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import stoke
from stoke.cli import main


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
    (tmp_path / "ds" / "manifest.json").write_text('{"format": "stoke", "format_version": 3}')
    completed = run_cli("inspect", str(tmp_path / "ds"))
    assert completed.returncode == 2
    assert "format version 3" in completed.stderr and "upgrade stoke" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_bad_option_values_are_usage_errors(tmp_path, image_folder):
    completed = run_cli("pack", str(image_folder), str(tmp_path / "ds"), "--shard-size", "lots")
    assert completed.returncode == 2 and "not a size" in completed.stderr and "Traceback" not in completed.stderr


# ---- click's own usage errors: one line in stoke's format, exit code 2 ----------------------------------------


def test_usage_errors_are_one_line_naming_the_command_help(tmp_path, image_folder):
    runner = CliRunner()
    cases = [
        (["split"], "missing argument 'DATASET'", "stoke split --help"),
        (["split", str(tmp_path), "--train", "2"], "invalid value for '--train'", "stoke split --help"),
        (["split", str(tmp_path), "--tain", "0.3"], "no such option '--tain'", "stoke split --help"),
        (["pak", str(image_folder)], "no such command 'pak'", "stoke --help"),
        (["inspect", "a", "b"], "unexpected extra argument", "stoke inspect --help"),
        (["pack", str(image_folder), str(tmp_path / "ds"), "--shard-size", "lots"], "not a size", "stoke pack --help"),
        (
            ["pack", str(image_folder), str(tmp_path / "ds"), "--image-mode", "gif"],
            "'gif' is not one of",
            "stoke pack --help",
        ),
    ]
    for args, message, advice in cases:
        result = runner.invoke(main, args, prog_name="stoke")
        lines = result.stderr.splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("stoke: error: ") and message in lines[0] and f"`{advice}" in lines[0], lines
        assert result.stdout == ""
    assert not (tmp_path / "ds").exists()


def test_help_and_version_still_work_and_the_real_entry_point_is_one_line_too():
    runner = CliRunner()
    shown = runner.invoke(main, ["split", "--help"], prog_name="stoke")
    assert shown.exit_code == 0 and shown.stdout.startswith("Usage: stoke split") and "--stratify-bins" in shown.stdout
    version = runner.invoke(main, ["--version"], prog_name="stoke")
    assert version.exit_code == 0 and version.stdout.strip() == f"stoke, version {stoke.__version__}"
    completed = run_cli("verify")
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.splitlines() == [
        "stoke: error: missing argument 'DATASET'; see `python -m stoke verify --help`"
    ]


# ---- stoke split: shares, class names ------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path):
    stoke.pack({"x": np.arange(40), "label": np.arange(40) % 2}, tmp_path / "small", progress=False)
    return tmp_path / "small"


@pytest.mark.parametrize(
    ("given", "fractions"),
    [
        ([], {"train": 0.8, "val": 0.1, "test": 0.1}),
        (["--train", "0.8", "--val", "0.2"], {"train": 0.8, "val": 0.2}),  # no --test 0 needed
        (["--train", "0.9"], {"train": 0.9, "val": 0.1}),  # the rest goes to the first split not given
        (["--test", "0.25"], {"train": 0.75, "test": 0.25}),
        (["--train", "0.7", "--test", "0.1"], {"train": 0.7, "val": 0.2, "test": 0.1}),
        (["--val", "0.5", "--test", "0.5"], {"val": 0.5, "test": 0.5}),
    ],
)
def test_split_shares_not_given_are_filled_as_documented(small, given, fractions):
    result = CliRunner().invoke(main, ["split", str(small), *given, "--json"], prog_name="stoke")
    assert result.exit_code == 0, result.stderr
    stored = json.loads((small / "splits.json").read_text())["fractions"]
    assert stored == pytest.approx(fractions) and list(stored) == list(fractions)
    assert json.loads(result.stdout)["counts"] == {name: round(40 * share) for name, share in fractions.items()}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (["--train", "0.7", "--val", "0.5"], "--train 0.7 and --val 0.5 add up to 1.2, more than 1"),
        (
            ["--train", "0.5", "--val", "0.2", "--test", "0.2"],
            "add up to 0.9, not 1; leave one out to give it the rest",
        ),
        (["--train", "0", "--val", "0", "--test", "0"], "add up to 0, not 1"),
    ],
)
def test_split_shares_that_cannot_work_are_one_line(small, given, message):
    result = CliRunner().invoke(main, ["split", str(small), *given], prog_name="stoke")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr
    assert not (small / "splits.json").exists()


def test_split_shows_class_names_in_a_table(tmp_path, image_folder):
    stoke.pack(image_folder, tmp_path / "ds", progress=False, workers=1)
    result = CliRunner().invoke(
        main, ["split", str(tmp_path / "ds"), "--train", "0.5", "--stratify", "label"], prog_name="stoke"
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.split()[:3] == ["class", "train", "val"])
    for name in ("class_0", "class_1"):
        row = next(line for line in lines if line.split()[:1] == [name])
        assert row.split()[1:] == ["3", "3"] and row.rindex("3") == header.rindex("l")  # right-aligned under 'val'
    assert "\x1b[" not in result.stdout and "compared: image" in result.stdout
    shown = json.loads(
        CliRunner().invoke(main, ["split", str(tmp_path / "ds"), "--stratify", "label", "--json"]).stdout
    )
    assert shown["balance"]["train"] == {"0": 5, "1": 5}  # ids, as before
    assert shown["balance_by_name"]["train"] == {"class_0": 5, "class_1": 5} and shown["content"] == ["image"]
    float_label = CliRunner().invoke(main, ["split", str(tmp_path / "ds"), "--stratify", "path"], prog_name="stoke")
    assert float_label.exit_code == 2 and "12 distinct values among 12 samples" in float_label.stderr
