"""The main job: `stoke demo` packs real digits, trains with the Loader, and reaches 95% on held-out data."""

from __future__ import annotations

import json
import subprocess
import sys

import stoke


def test_demo_trains_to_95_percent_and_reports_json(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "stoke", "demo", "--json", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    summary = json.loads(lines[-1])
    assert {"val_accuracy", "samples_per_s", "data_wait_fraction", "seconds", "dataset"} <= summary.keys()
    assert summary["val_accuracy"] >= 0.95
    assert summary["samples_per_s"] > 0 and 0 <= summary["data_wait_fraction"] < 1
    assert len(summary["epochs"]) == 12
    assert any("waited for data" in line and "val accuracy" in line for line in lines[:-1])
    assert str(tmp_path / "digits") in lines[-2]

    dataset = stoke.open(summary["dataset"])
    assert len(dataset) == 1797 and dataset.manifest.num_quarantined == 0
    assert dataset.manifest.field_entry("label").classes == [str(digit) for digit in range(10)]
    assert dataset[0]["image"].shape == (8, 8, 1)
