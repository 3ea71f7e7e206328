"""The profiler's outputs: JSON that round-trips, TensorBoard scalars, the PNG, the terminal table."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import stoke
from stoke.errors import FormatError
from stoke.ops import Map, Resize
from stoke.profile.report import Report, format_table


def slow(image: np.ndarray) -> None:
    time.sleep(0.002)


@pytest.fixture(scope="module")
def written(photos: stoke.Dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Report]:
    out = tmp_path_factory.mktemp("profile-out")
    loader = stoke.Loader(photos, 4, num_threads=2, transforms={"image": [Resize((16, 16)), Map(slow)]})
    profiler = stoke.profile(loader, out=out, steps=3, headspace_steps=2)
    for _ in range(2):
        for _batch in loader:
            pass
    loader.close()
    assert profiler.finished  # the report was written after the profiled and headspace steps
    return out, profiler.report()


def test_report_json_round_trips(written: tuple[Path, Report]) -> None:
    out, report = written
    data = json.loads((out / "report.json").read_text())
    assert data["classification"] == report.classification
    again = Report.from_dict(data)
    assert again == report
    assert Report.from_dict(json.loads(again.to_json())) == report


def test_a_foreign_json_is_refused() -> None:
    with pytest.raises(FormatError, match="not a stoke profile report"):
        Report.from_dict({"steps": 3})


def test_tensorboard_scalars_are_readable(written: tuple[Path, Report]) -> None:
    out, report = written
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "stoke/profile/input_share" in tags
    assert events.Scalars("stoke/profile/input_share")[0].value == pytest.approx(report.input_share, rel=1e-6)
    assert len(events.Scalars("stoke/profile/step_ms")) == 1 + 3 + 2  # warm-up, profiled, headspace
    assert "stoke/profile/stage_seconds/image__Map_slow_" in tags
    assert "stoke/profile/stage_ms_per_step/image__Map_slow_" in tags


def test_png_is_written(written: tuple[Path, Report]) -> None:
    out, _ = written
    data = (out / "profile.png").read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


def test_table_names_the_verdict_bottleneck_and_recommendations(written: tuple[Path, Report]) -> None:
    _, report = written
    table = format_table(report)
    assert table.startswith(report.classification)
    assert f"bottleneck: {report.bottleneck}" in table
    assert "headspace:" in table
    for item in report.recommendations:
        assert item.action in table
