"""stoke inspect: aligned tables for people (plain when piped, fitted on a terminal), the same JSON for scripts,
and advice that fits what the path really holds when it is not a dataset."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console
from rich.text import Text

import stoke
from stoke.cli import main
from stoke.errors import NotADatasetError
from stoke.inspect import format_summary, show, summarize, summary_renderables
from stoke.prepare.split import make_splits


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory):
    """scikit-learn's breast-cancer table (long column names such as 'worst concave points') packed from a CSV."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    root = tmp_path_factory.mktemp("table")
    lines = [",".join([*data.feature_names, "label"])]
    lines += [",".join([*(f"{v:g}" for v in row), data.target_names[y]]) for row, y in zip(data.data, data.target)]
    (root / "cancer.csv").write_text("\n".join(lines) + "\n")
    stoke.pack(root / "cancer.csv", root / "cancer.stoke", progress=False, workers=1)
    return root / "cancer.stoke"


def columns_line_up(lines, header_words, names):
    """Each row named in ``names`` has its second cell starting exactly under the header's second word."""
    header = next(line for line in lines if line.split()[: len(header_words)] == header_words)
    start = header.index(f" {header_words[1]}") + 1
    rows = [next(line for line in lines if line.strip().startswith(f"{name}  ")) for name in names]
    return [row[start - 1] == " " and row[start] != " " for row in rows]


def test_long_field_names_align_in_the_fields_and_columns_tables(breast_cancer):
    lines = format_summary(summarize(stoke.open(breast_cancer))).splitlines()
    names = ["mean radius", "worst concave points", "fractal dimension error", "label"]
    assert all(columns_line_up(lines, ["field", "type"], names))
    assert all(columns_line_up(lines, ["column", "type"], names))
    row = next(line for line in lines if line.strip().startswith("worst concave points") and "missing:" in line)
    assert row.split()[3] == "float" and "range 0..0.291" in row  # the whole row on one line


def test_piped_output_is_plain_and_never_wrapped_at_80_columns(breast_cancer):
    env = {**os.environ, "COLUMNS": "80"}
    piped = subprocess.run(
        [sys.executable, "-m", "stoke", "inspect", str(breast_cancer)], capture_output=True, text=True, env=env
    )
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout
    assert piped.stdout.rstrip("\n") == format_summary(summarize(stoke.open(breast_cancer)))
    assert max(len(line) for line in piped.stdout.splitlines()) > 80  # rows kept whole, not folded
    assert not any(line != line.rstrip() for line in piped.stdout.splitlines())


def test_on_a_terminal_tables_are_styled_and_fitted_to_its_width(breast_cancer):
    buffer = io.StringIO()
    terminal = Console(file=buffer, force_terminal=True, width=70, color_system="standard")
    show(summary_renderables(summarize(stoke.open(breast_cancer))), console=terminal)
    text = buffer.getvalue()
    assert "\x1b[1m" in text  # bold headers
    plain = Text.from_ansi(text).plain.splitlines()
    assert len(plain) > 60 and max(len(line) for line in plain) <= 70
    assert ["worst", "concave", "points", "float"] in [line.split() for line in plain]  # rows, not wrapped names


def test_json_is_unchanged_by_the_tables(tmp_path, image_folder):
    stoke.pack(image_folder, tmp_path / "ds", progress=False, workers=1)
    shown = CliRunner().invoke(main, ["inspect", str(tmp_path / "ds"), "--json"])
    assert shown.exit_code == 0
    summary = json.loads(shown.stdout)
    assert summary == json.loads(json.dumps(summarize(stoke.open(tmp_path / "ds"))))
    assert set(summary) == {
        "path", "format_version", "version", "versions", "created_by", "num_samples", "num_quarantined",
        "num_shards", "total_bytes", "fields", "source", "pack", "splits", "attachments",
    }  # fmt: skip


def test_image_folder_rows_show_sizes_and_class_names(tmp_path, image_folder):
    stoke.pack(image_folder, tmp_path / "ds", progress=False, workers=1)
    make_splits(stoke.open(tmp_path / "ds"), {"train": 0.5, "val": 0.5}, stratify="label")
    lines = format_summary(summarize(stoke.open(tmp_path / "ds"))).splitlines()
    image = next(line for line in lines if line.split()[:2] == ["image", "image"])
    assert "encoding=keep" in image and "sizes 48x54 to 63x64 (height x width)" in image
    label = next(line for line in lines if line.split()[:2] == ["label", "int"])
    assert label.endswith("2 classes: class_0, class_1")
    for name in ("class_0", "class_1"):  # the split balance names the classes
        assert next(line for line in lines if line.split()[:1] == [name]).split()[1:] == ["3", "3"]
    assert "stratified by label" in next(line for line in lines if line.split()[:1] == ["splits"])


def test_text_dataset_and_text_stratified_splits(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    for number in range(6):
        (folder / f"note_{number}.txt").write_text(f"note {number}\n")
    stoke.pack(stoke.sources.TextSource(folder), tmp_path / "ds", progress=False, workers=1)
    records = [{"x": np.full(2, i), "lang": ["en", "fr"][i % 2]} for i in range(8)]
    stoke.pack(records, tmp_path / "langs", progress=False)
    make_splits(stoke.open(tmp_path / "langs"), {"train": 0.5, "val": 0.5}, stratify="lang")
    lines = format_summary(summarize(stoke.open(tmp_path / "ds"))).splitlines()
    assert next(line for line in lines if line.split()[:2] == ["tokens", "ndarray"])
    attached = (tmp_path / "ds" / "tokenizer.json").stat().st_size
    assert f"  attached     tokenizer.json ({attached:,} bytes)" in lines
    summary = summarize(stoke.open(tmp_path / "langs"))
    assert summary["splits"]["class_names"] == {"0": "en", "1": "fr"}
    lines = format_summary(summary).splitlines()
    assert next(line for line in lines if line.split()[:1] == ["fr"]).split()[1:] == ["2", "2"]


def test_field_names_are_never_read_as_markup(tmp_path):
    stoke.pack({"[bold]x": np.arange(3)}, tmp_path / "ds", progress=False)
    assert "[bold]x" in format_summary(summarize(stoke.open(tmp_path / "ds")))


# ---- not a dataset: advice that fits what the path holds -----------------------------------------------------


def test_inspecting_an_image_folder_says_to_pack_it_beside_itself(tmp_path, image_folder):
    result = CliRunner().invoke(main, ["inspect", str(image_folder)], prog_name="stoke")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    target = image_folder.with_name("images.stoke")
    assert f"it looks like an image folder: pack it with `stoke pack {image_folder} {target}`" in result.stderr
    relative = subprocess.run(
        [sys.executable, "-m", "stoke", "inspect", "."], capture_output=True, text=True, cwd=image_folder
    )
    assert "`stoke pack . ../images.stoke`" in relative.stderr  # never into the image folder itself


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: p.mkdir(), r"it is empty: pack one into it with `stoke pack SOURCE .*where`"),
        (lambda p: (p.mkdir(), (p / "a.png").write_bytes(b"")), r"holds images but no class folders"),
        (
            lambda p: (p.mkdir(), (p / "a.txt").write_text("hi")),
            r"text files: pack it with `stoke pack \S*where \S*where.stoke --tokenizer byte`",
        ),
        (lambda p: (p.mkdir(), (p / "notes.md").write_text("hi")), r"give a dataset directory"),
        (lambda p: p.with_suffix(".csv").write_text("x\n1\n"), r"a CSV listing or table: pack it with `stoke pack "),
        (lambda p: None, r"does not exist"),
    ],
)
def test_every_not_a_dataset_message_fits_the_path(tmp_path, make, expected):
    path = tmp_path / "where"
    make(path)
    target = path.with_suffix(".csv") if path.with_suffix(".csv").exists() else path
    with pytest.raises(NotADatasetError, match=expected):
        stoke.open(target)


def test_a_listing_already_packed_or_a_manifest_points_at_the_dataset(tmp_path):
    stoke.pack({"y": np.arange(3)}, tmp_path / "rows.stoke", progress=False)
    (tmp_path / "rows.csv").write_text("y\n1\n")
    with pytest.raises(NotADatasetError, match=r"rows.stoke beside it is a dataset: give that"):
        stoke.open(tmp_path / "rows.csv")
    with pytest.raises(NotADatasetError, match=r"a dataset's manifest: give its directory, .*rows.stoke$"):
        stoke.open(tmp_path / "rows.stoke" / "manifest.json")
    with pytest.raises(NotADatasetError, match=r"but it holds a dataset: give .*rows.stoke$"):
        stoke.open(tmp_path)
