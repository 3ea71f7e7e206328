"""stoke bench runs end to end and reports consistent figures (a benchmark's values are never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from PIL import Image

from stoke.bench.baseline import ImageFiles, random_resized_crop_params
from stoke.bench.images import bench_images


def test_bench_images_are_cached_natural_jpegs(tmp_path):
    folder = bench_images(tmp_path, count=12, seed=3)
    files = sorted(folder.rglob("*.jpg"))
    assert len(files) == 12 and len({path.parent.name for path in files}) == 10
    for path in files:
        with Image.open(path) as image:
            assert image.format == "JPEG" and 330 <= image.width <= 500
    before = {path: path.stat().st_mtime_ns for path in files}
    assert bench_images(tmp_path, count=12, seed=3) == folder  # cached: not written again
    assert {path: path.stat().st_mtime_ns for path in files} == before


def test_baseline_crop_follows_torchvision():
    import random

    random.seed(0)
    for _ in range(500):
        height, width = random.randint(1, 600), random.randint(1, 600)
        top, left, crop_height, crop_width = random_resized_crop_params(height, width)
        assert 0 <= top <= height - crop_height and 0 <= left <= width - crop_width and crop_height > 0


def test_bench_reports_every_figure(tmp_path):
    env_cache = tmp_path / "home"
    completed = subprocess.run(
        [sys.executable, "-m", "stoke", "bench", "--images", "40", "--epochs", "1", "--threads", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "STOKE_HOME": str(env_cache)},
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    for key in ("baseline_images_per_s", "stoke_images_per_s", "ceiling_images_per_s", "first_batch_s", "peak_rss_mb"):
        assert result[key] > 0, key
    assert result["speedup"] == result["stoke_images_per_s"] / result["baseline_images_per_s"]
    assert result["ceiling_fraction"] == result["stoke_images_per_s"] / result["ceiling_images_per_s"]
    assert result["images"] == 40 and result["threads"] == 1
    assert result["memcpy_gb_per_s"] > 0 and len(result["stoke_rss_mb_per_epoch"]) == 1
    assert result["stoke_stored_gb_per_s"] == result["stoke_images_per_s"] * result["stored_bytes_per_image"] / 1e9
    assert "warm-up" in completed.stderr  # the per-epoch log goes to stderr with --json
    assert len(ImageFiles.from_folder(next((env_cache / "bench").glob("images-*")))) == 40


def test_bench_with_a_user_transform_measures_threads_and_processes(tmp_path):
    from stoke.bench.run import format_report, run_bench

    result = run_bench(images=24, epochs=1, threads=1, user_transform=True, cache=tmp_path, log=lambda line: None)
    thread, process = result["stoke_thread_images_per_s"], result["stoke_process_images_per_s"]
    assert thread > 0 and process > 0 and result["user_transform"] is True
    assert result["stoke_images_per_s"] == max(thread, process)
    assert result["stoke_workers"] == ("thread" if thread >= process else "process")
    report = format_report(result)
    assert "stoke Loader (threads)" in report and "stoke Loader (processes)" in report and "GIL-bound" in report
    from stoke.pipeline import resample

    assert result["machine"]["resize"] == resample.backend()  # which resize the figures were measured with
    assert f"resize: {resample.backend()}" in report


def test_the_user_transform_stretches_each_row():
    import numpy as np

    from stoke.bench.user_transform import stretch_rows

    image = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    image[3] = 9  # a flat row stays as it is
    rows = image.reshape(7, -1).astype(np.int64)
    low, high = rows.min(axis=1, keepdims=True), rows.max(axis=1, keepdims=True)
    expected = np.where(high > low, (rows - low) * 255 // np.maximum(high - low, 1), rows)
    np.testing.assert_array_equal(stretch_rows(image).reshape(7, -1), expected)
