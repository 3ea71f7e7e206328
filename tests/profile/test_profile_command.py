"""``stoke profile -- python script.py``: an unchanged script's Loader profiles itself; the command prints
the report and exits with the script's exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import stoke

SCRIPT = """
import sys, time
import numpy as np
import stoke
from stoke.ops import Map, Resize

def slow(image):
    time.sleep(0.003)

loader = stoke.Loader(stoke.open(sys.argv[1]), batch_size=4, num_threads=1,
                      transforms={"image": [Resize((16, 16)), Map(slow)]})
for epoch in range(2):
    for batch in loader:
        pass
print("trained")
sys.exit(3)
"""


def profile(tmp_path: Path, photos: stoke.Dataset, *options: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    command = [sys.executable, "-m", "stoke", "profile", "--out", str(tmp_path / "out"), "--steps", "3"]
    command += [*options, "--headspace", "2", "--", sys.executable, str(script), str(photos.root)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_stoke_profile_runs_the_script_and_prints_the_report(tmp_path: Path, photos: stoke.Dataset) -> None:
    done = profile(tmp_path, photos)
    assert done.returncode == 3, done.stderr  # the script's own exit code
    assert "trained" in done.stdout  # the script ran to its end
    assert "highly input-bound" in done.stdout
    assert "bottleneck: image: Map(slow)" in done.stdout
    (report_dir,) = (tmp_path / "out").glob("loader-*")
    assert {"report.json", "profile.png", "tensorboard"} <= {path.name for path in report_dir.iterdir()}


def test_stoke_profile_json(tmp_path: Path, photos: stoke.Dataset) -> None:
    done = profile(tmp_path, photos, "--json")
    assert done.returncode == 3, done.stderr
    reports = json.loads(done.stdout.splitlines()[-1])
    assert len(reports) == 1
    assert reports[0]["steps"] == 3 and reports[0]["headspace"] is not None
    assert reports[0]["classification"] == "highly input-bound"


def test_stoke_profile_without_a_command_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "stoke", "profile"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "COMMAND" in done.stderr
