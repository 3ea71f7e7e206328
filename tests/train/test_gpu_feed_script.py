"""Smoke test of ``benchmarks/gpu_feed.py`` (issue 8's GPU-feeding benchmark) on the CPU in ``--quick`` mode.

It checks the script runs end to end (generating and packing a tiny set under ``$STOKE_HOME``, three
interleaved phases, the profiler's input-bound share) and that its JSON has the figures and bars the GPU
session will record. The figures are not judged: timings on a shared CPU mean nothing.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stoke.machine import available_cores

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_feed.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_feed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_every_figure_and_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("STOKE_HOME", str(tmp_path / "home"))
    out = tmp_path / "gpu_feed.json"
    script = load_script()
    # 6 images for phases of 3 batches of 4: each phase's epoch repeats the set (a view for stoke, a
    # sampler for the baseline), so no phase meets an epoch boundary.
    returned = script.main(["--quick", "--device", "cpu", "--threads", "999", "--images", "6", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result == json.loads(json.dumps(returned))  # the file holds what the run returned

    # The pack is cached under STOKE_HOME, as `stoke bench` caches its own.
    assert (tmp_path / "home" / "bench" / "packs").is_dir()
    assert Path(result["settings"]["dataset"]).is_relative_to(tmp_path / "home" / "bench" / "packs")

    settings, device = result["settings"], result["device"]
    assert settings["quick"] is True and settings["images"] == 6 and settings["max_side"] == 256
    assert (settings["batch_size"], settings["steps"], settings["warmup"], settings["repeats"]) == (4, 2, 1, 1)
    assert settings["threads_requested"] == 999 and settings["threads"] == available_cores()  # capped
    assert device["type"] == "cpu" and device["name"] and device["torch"]
    assert device["cores_used"] == settings["threads"]

    phases = {"stoke", "cached", "baseline"}
    assert set(result["images_per_s"]) == phases == set(result["per_round_images_per_s"])
    for name in phases:
        rounds = result["per_round_images_per_s"][name]
        assert len(rounds) == settings["repeats"] and all(rate > 0 for rate in rounds)
        assert result["timed_steps"][name] == [settings["steps"]] * settings["repeats"]  # full batches only
        assert result["images_per_s"][name] > 0
        assert 0.0 <= result["wait_share"][name] <= 1.0
    rates = result["images_per_s"]
    assert result["stoke_vs_cached"] == pytest.approx(rates["stoke"] / rates["cached"])
    assert result["stoke_vs_baseline"] == pytest.approx(rates["stoke"] / rates["baseline"])
    assert 0.0 <= result["input_bound_share"] <= 1.0
    assert len(result["input_bound_share_per_round"]) == settings["repeats"]
    assert result["input_bound_timing"] == "cpu"  # no CUDA events on the CPU

    assert set(result["bars"]) == {"stoke_vs_cached", "input_bound_share"}
    assert result["bars"]["stoke_vs_cached"]["met"] is (result["stoke_vs_cached"] >= 0.95)
    assert result["bars"]["input_bound_share"]["met"] is (result["input_bound_share"] < 0.05)

    printed = capsys.readouterr()
    assert "stoke / cached" in printed.out and "using" in printed.err  # the table, and the capped threads said


def test_bars_and_rotation() -> None:
    script = load_script()
    assert script.bars(0.95, 0.049) == {
        "stoke_vs_cached": {"bar": ">= 0.95", "met": True},
        "input_bound_share": {"bar": "< 0.05", "met": True},
    }
    assert [bar["met"] for bar in script.bars(0.949, 0.05).values()] == [False, False]
    orders = [script.rotated(script.PHASES, number) for number in range(3)]
    assert [order[0] for order in orders] == ["baseline", "stoke", "cached"]  # each phase goes first once
    assert all(sorted(order) == sorted(script.PHASES) for order in orders)


def test_bad_argument_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOKE_HOME", str(tmp_path))
    with pytest.raises(SystemExit, match=r"--steps must be at least 1, got 0"):
        load_script().main(["--quick", "--device", "cpu", "--steps", "0"])
    assert not (tmp_path / "bench").exists()  # refused before generating anything
