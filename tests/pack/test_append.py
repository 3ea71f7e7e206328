"""Datasets that grow: ``stoke pack SOURCE DATASET --append`` and ``stoke.open(path, version=N)``.

Each test attacks one promise of docs/growing.md: versions stored and opened (an old reader, one with an
older version open, one asking for an unknown version), what must agree on an append (fields, settings,
class lists that may only grow at their end, the tokenizer, a table's cleaning) and the one sentence
for each refusal, the lock, reruns that never add samples twice, and the CLI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import stoke
from helpers import encode, photo, write_image_folder
from stoke.cli import main
from stoke.errors import AppendError, ConfigError, FormatError, PackError
from stoke.format.manifest import MANIFEST_NAME, Manifest
from stoke.inspect import format_summary, summarize
from stoke.pack.append import dataset_lock
from stoke.verify import verify


def arrays(start: int, size: int) -> dict[str, np.ndarray]:
    values = np.arange(start, start + size)
    return {"x": np.repeat(values[:, None], 2, axis=1).astype(np.float32), "label": values % 3}


def grown(root: Path, *sizes: int, shard_items: int = 4) -> Path:
    """A dataset of ``sizes[0]`` samples appended to with each further size (x counts up from 0)."""
    start = 0
    for number, size in enumerate(sizes):
        stoke.pack(arrays(start, size), root, append=number > 0, shard_items=shard_items, workers=1, progress=False)
        start += size
    return root


def xs(dataset) -> list[int]:
    return [int(dataset[index]["x"][0]) for index in range(len(dataset))]


# ---- versions: stored, opened, listed ---------------------------------------------------------------------


def test_each_version_lists_the_old_shards_unchanged_then_the_new_ones(tmp_path):
    root = grown(tmp_path / "ds", 10, 5, 7)
    newest = stoke.open(root)
    assert newest.version == 3 and xs(newest) == list(range(22))
    assert [(v.version, v.num_samples, v.num_shards) for v in newest.versions] == [(1, 10, 3), (2, 15, 5), (3, 22, 7)]
    for version, size in ((1, 10), (2, 15)):
        older = stoke.open(root, version=version)
        assert older.version == version and xs(older) == list(range(size))
        assert older.manifest.shards == newest.manifest.shards[: len(older.manifest.shards)]
    assert sorted(p.name for p in (root / "versions").iterdir()) == [
        "manifest-v1.json",
        "manifest-v2.json",
        "quarantine-v2.jsonl",
        "quarantine-v3.jsonl",
    ]
    assert verify(root).ok


def test_a_dataset_that_never_grew_keeps_its_bytes_and_is_version_1(tmp_path):
    stoke.pack(arrays(0, 6), tmp_path / "ds", workers=1, progress=False)
    document = json.loads((tmp_path / "ds" / MANIFEST_NAME).read_text())
    assert "version" not in document and "versions" not in document
    dataset = stoke.open(tmp_path / "ds")
    assert dataset.version == 1 and [v.to_dict() for v in dataset.versions] == [
        {"version": 1, "num_samples": 6, "num_shards": 1, "num_quarantined": 0, "created": None}
    ]
    assert len(stoke.open(tmp_path / "ds", version=1)) == 6


def test_a_reader_with_the_old_version_open_keeps_reading_it(tmp_path):
    root = grown(tmp_path / "ds", 9)
    old = stoke.open(root)
    first = [old[index]["x"].tolist() for index in range(9)]
    stoke.pack(arrays(9, 4), root, append=True, shard_items=4, workers=1, progress=False)
    assert len(old) == 9 and [old[index]["x"].tolist() for index in range(9)] == first
    assert old.version == 1 and old.packing_id == stoke.open(root, version=1).packing_id
    loader = stoke.Loader(old, batch_size=4)
    assert sorted(int(v) for batch in loader for v in batch["x"][:, 0]) == list(range(9))


def test_the_newest_manifest_is_a_whole_dataset_to_a_reader_that_knows_no_versions(tmp_path):
    """docs/format.md §12's minimal reader, which predates versions, reads every sample of the newest one."""
    from format.test_integrity import spec_section

    code = spec_section("## 12. A minimal reader").split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(code, "format.md", "exec"), namespace)
    root = grown(tmp_path / "ds", 5, 6)
    dataset = stoke.open(root)
    for index in range(len(dataset)):
        assert namespace["read_fields"](str(root), index) == [bytes(p) for p in dataset.read_fields(index, verify=True)]


@pytest.mark.parametrize("asked", [0, 4, -1, "2", True])
def test_an_unknown_version_is_one_sentence_listing_the_versions(tmp_path, asked):
    root = grown(tmp_path / "ds", 4, 4, 4)
    with pytest.raises(ConfigError) as error:
        stoke.open(root, version=asked)
    message = str(error.value)
    assert "\n" not in message
    assert "versions 1 to 3" in message or "positive integer" in message


def test_a_kept_manifest_that_was_changed_or_lost_is_refused_by_name_and_verify_reports_it(tmp_path):
    root = grown(tmp_path / "ds", 4, 4)
    kept = root / "versions" / "manifest-v1.json"
    kept.write_text(kept.read_text().replace('"num_quarantined": 0', '"num_quarantined": 1'))
    with pytest.raises(FormatError, match=r"manifest-v1.json does not match the checksum version 2 lists"):
        stoke.open(root, version=1)
    report = verify(root)
    assert not report.ok and report.shard_problems[0]["shard"] == "versions/manifest-v1.json"
    assert len(stoke.open(root)) == 8  # the newest still reads
    kept.unlink()
    with pytest.raises(FormatError, match=r"manifest-v1.json is missing"):
        stoke.open(root, version=1)


def test_a_damaged_history_is_refused_when_the_manifest_is_read(tmp_path):
    from helpers import rewrite_manifest

    root = grown(tmp_path / "ds", 4, 4)
    original = (root / MANIFEST_NAME).read_text()

    def lie(change):
        (root / MANIFEST_NAME).write_text(original)
        rewrite_manifest(root, change)
        with pytest.raises(FormatError, match=r"versions|version"):
            Manifest.read(root)

    lie(lambda d: d["versions"][1].update(num_samples=9))  # not what the manifest lists
    lie(lambda d: d["versions"].pop())  # one entry short
    lie(lambda d: d["versions"][0].update(num_shards=5))  # more shards than version 2
    lie(lambda d: d["versions"][0].pop("manifest_xxh3_64"))
    lie(lambda d: d.update(version=0))
    lie(lambda d: d["versions"][1].update(version=3))


# ---- what must agree --------------------------------------------------------------------------------------


def test_fields_that_differ_refuse_the_append_in_one_sentence_and_add_nothing(tmp_path):
    root = grown(tmp_path / "ds", 6)
    before, files = (root / MANIFEST_NAME).read_bytes(), sorted(p.name for p in root.iterdir())
    wrong = [
        ({"x": np.zeros((3, 2), np.float32)}, r"the fields of the arrays are x, and those of .* are x, label"),
        ({"label": np.arange(3), "x": np.zeros((3, 2), np.float32)}, r"same fields in the same order"),
        ({"x": np.zeros((3, 2), np.float64), "label": np.arange(3)}, r"field 'x' is an ndarray field \(dtype='<f8'"),
        ({"x": np.zeros((3, 4), np.float32), "label": np.arange(3)}, r"shape=\[4\]"),
        ({"x": np.zeros((3, 2), np.float32), "label": np.arange(3.0)}, r"field 'label' is a float field"),
    ]
    for source, expected in wrong:
        with pytest.raises(AppendError, match=expected) as error:
            stoke.pack(source, root, append=True, workers=1, progress=False)
        assert "\n" not in str(error.value)
    assert (root / MANIFEST_NAME).read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == files


def test_new_image_classes_go_at_the_end_and_old_labels_keep_their_meaning(tmp_path):
    write_image_folder(tmp_path / "first", classes=2, per_class=3)  # class_0, class_1
    second = tmp_path / "second"
    for name in ("class_1", "aardvark"):  # an existing class, and one that sorts first
        (second / name).mkdir(parents=True)
        for index in range(2):
            (second / name / f"{name}-{index}.png").write_bytes(encode(photo(20, 30, seed=index), "PNG"))
    root = tmp_path / "ds"
    stoke.pack(tmp_path / "first", root, workers=1, progress=False)
    result = stoke.pack(second, root, append=True, workers=1, progress=False)
    assert any("added 1 classes to field 'label': 'aardvark' (2)" in note for note in result.notes)
    dataset = stoke.open(root)
    assert dataset.manifest.field_entry("label").classes == ["class_0", "class_1", "aardvark"]
    assert stoke.open(root, version=1).manifest.field_entry("label").classes == ["class_0", "class_1"]
    names = dataset.manifest.field_entry("label").classes
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["path"].split("/")[0] == names[sample["label"]]
    assert [dataset[i]["label"] for i in range(6)] == [0, 0, 0, 1, 1, 1]  # as packed, unchanged
    assert verify(root).ok


def test_images_are_encoded_with_the_datasets_settings_and_their_sizes_widen_the_stats(tmp_path):
    write_image_folder(tmp_path / "first", classes=1, per_class=2, size=(20, 24))
    write_image_folder(tmp_path / "second", classes=1, per_class=2, size=(60, 70))
    root = tmp_path / "ds"
    stoke.pack(tmp_path / "first", root, image_mode="png", max_side=64, workers=1, progress=False)
    stoke.pack(tmp_path / "second", root, append=True, workers=1, progress=False)  # png, max_side 64: the dataset's
    dataset = stoke.open(root)
    image = dataset.manifest.field_entry("image")
    assert image.field.encoding == "png" and image.field.max_side == 64
    assert max(image.stats["max_height"], image.stats["max_width"]) == 64 and image.stats["min_height"] == 20
    assert all(max(dataset[i]["image"].shape[:2]) <= 64 for i in range(len(dataset)))
    with pytest.raises(AppendError, match=r"stores its images with .*encoding='png'.*quality=70 differs"):
        stoke.pack(tmp_path / "second", root, append=True, quality=70, workers=1, progress=False)


def test_text_is_tokenized_with_the_datasets_own_tokenizer_never_retrained(tmp_path):
    from stoke.sources import TextSource

    (tmp_path / "a.txt").write_text("\n\n".join(f"the cat sat on mat number {n}" for n in range(40)))
    (tmp_path / "b.txt").write_text("\n\n".join(f"zebra quokka axolotl {n}" for n in range(10)))
    root = tmp_path / "ds"
    stoke.pack(TextSource(tmp_path / "a.txt", tokenizer="bpe", vocab_size=300), root, workers=1, progress=False)
    attached = (root / "tokenizer.json").read_bytes()
    stoke.pack(TextSource(tmp_path / "b.txt", tokenizer="bpe", vocab_size=300), root, append=True, progress=False)
    dataset = stoke.open(root)
    assert (root / "tokenizer.json").read_bytes() == attached and dataset.version == 2
    tokenizer = dataset.tokenizer()
    for index in range(40, 50):
        sample = dataset[index]
        assert sample["tokens"].tolist() == tokenizer.encode(sample["text"]).ids
        assert tokenizer.decode(sample["tokens"].tolist()) == sample["text"]
    with pytest.raises(AppendError, match=r"tokenized with its bpe tokenizer .* give 'bpe'"):
        stoke.pack(TextSource(tmp_path / "b.txt", tokenizer="byte"), root, append=True, progress=False)
    other = TextSource(tmp_path / "b.txt", tokenizer="bpe", vocab_size=300).tokenizer.hf  # trained on b.txt
    with pytest.raises(AppendError, match=r"attaches a different tokenizer.json .* must reuse the dataset's"):
        stoke.pack(TextSource(tmp_path / "b.txt", tokenizer=other), root, append=True, progress=False)


TABLE = "age,city,label\n" + "".join(
    f"{20 + i},{'Oslo' if i % 2 else 'Rome'},{'yes' if i % 3 else 'no'}\n" for i in range(9)
)


def test_new_table_rows_are_cleaned_with_the_stored_statistics_not_refitted(tmp_path):
    (tmp_path / "first.csv").write_text(TABLE + ",Oslo,yes\n")  # one gap: filled with the median, 24
    (tmp_path / "more.csv").write_text("age,city,label\n,Rome,maybe\n90,Oslo,no\n91,Rome,yes\n")
    root = tmp_path / "ds"
    stoke.pack(tmp_path / "first.csv", root, workers=1, progress=False)
    stored = stoke.open(root).manifest.source["columns"][0]["missing"]
    assert stored["fill"] == 24.0
    result = stoke.pack(tmp_path / "more.csv", root, append=True, workers=1, progress=False)
    dataset = stoke.open(root)
    assert [dataset[i]["age"] for i in range(10, 13)] == [24.0, 90.0, 91.0]  # the new rows' median would be 90.5
    labels = dataset.manifest.field_entry("label").classes
    assert labels == ["no", "yes", "maybe"] and dataset[10]["label"] == 2  # a label's new class: at the end
    assert dataset.manifest.source == stoke.open(root, version=1).manifest.source  # the fitted cleaning, kept
    assert dataset.versions[1].source["columns"][0]["missing"]["filled"] == 1
    assert result.notes[0].startswith("added 1 classes to field 'label'")


@pytest.mark.parametrize(
    ("rows", "options", "expected"),
    [
        ("age,city,label\n30,Paris,yes\n", {}, r"column 'city' .* holds 1 values that .* categories lack \('Paris'\)"),
        ("age,label,city\n30,yes,Oslo\n", {}, r"has the columns age, label, city, and the table .* had age, city"),
        ("age,city,label\n30,Oslo,yes\n", {"missing": "mean"}, r"cleaned with 'median' when it was packed, not 'mean'"),
        ("age,city,label\n30,Oslo,yes\n", {"types": {"age": "text"}}, r"column 'age' is a float column .* not text"),
    ],
)
def test_a_table_that_cannot_be_cleaned_as_the_dataset_was_refuses_the_append(tmp_path, rows, options, expected):
    from stoke.sources import TableSource

    (tmp_path / "first.csv").write_text(TABLE + ",Oslo,yes\n")
    (tmp_path / "more.csv").write_text(rows)
    root = tmp_path / "ds"
    stoke.pack(tmp_path / "first.csv", root, workers=1, progress=False)
    with pytest.raises(AppendError, match=expected) as error:
        stoke.pack(TableSource(tmp_path / "more.csv", **options), root, append=True, workers=1, progress=False)
    assert "\n" not in str(error.value)
    assert stoke.open(root).version == 1


def test_gaps_a_knn_or_unrecorded_fill_cannot_fill_refuse_the_append(tmp_path):
    from stoke.sources import TableSource

    (tmp_path / "first.csv").write_text("a,b,label\n" + "".join(f"{i},{2 * i},{i % 2}\n" for i in range(8)) + ",1,0\n")
    (tmp_path / "more.csv").write_text("a,b,label\n,5,1\n")
    (tmp_path / "full.csv").write_text("a,b,label\n9,18,1\n")
    root = tmp_path / "ds"
    stoke.pack(TableSource(tmp_path / "first.csv", missing="knn"), root, workers=1, progress=False)
    with pytest.raises(AppendError, match=r"column 'a' .* has gaps, which .* filled from the nearest packed rows"):
        stoke.pack(tmp_path / "more.csv", root, append=True, workers=1, progress=False)
    stoke.pack(tmp_path / "full.csv", root, append=True, workers=1, progress=False)  # no gaps: nothing to refit
    assert stoke.open(root)[9]["a"] == 9
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    manifest["source"]["columns"][0]["missing"] = {"policy": "median", "dropped": 0, "filled": 0}  # an older pack's
    from stoke.sources.base import AppendTarget

    target = AppendTarget(str(root), stoke.open(root).manifest.fields, manifest["source"])
    with pytest.raises(AppendError, match=r"recorded no median to fill them with"):
        TableSource(tmp_path / "more.csv", fitted=target)


# ---- the lock, reruns, places an append cannot go -----------------------------------------------------------


def test_an_append_while_another_holds_the_lock_refuses_at_once(tmp_path):
    root = grown(tmp_path / "ds", 4)
    with (
        dataset_lock(root),
        pytest.raises(AppendError, match=r"is being appended to by another process.*one at a time"),
    ):
        stoke.pack(arrays(4, 2), root, append=True, workers=1, progress=False)
    stoke.pack(arrays(4, 2), root, append=True, workers=1, progress=False)  # let go: the append runs
    assert stoke.open(root).version == 2


def test_the_same_append_run_again_adds_nothing_and_another_adds_a_version(tmp_path):
    root = grown(tmp_path / "ds", 4, 3)
    again = stoke.pack(arrays(4, 3), root, append=True, shard_items=4, workers=1, progress=False)
    assert again.version == 2 and again.unchanged and "already holds this append as version 2" in str(again)
    assert again.to_dict()["unchanged"] and again.num_samples == 3 and again.dataset_samples == 7
    assert stoke.open(root).version == 2 and len(stoke.open(root)) == 7
    stoke.pack(arrays(7, 3), root, append=True, shard_items=4, workers=1, progress=False)
    assert stoke.open(root).version == 3 and xs(stoke.open(root)) == list(range(10))


def test_appends_that_cannot_start_say_why(tmp_path):
    with pytest.raises(PackError, match=r"holds no dataset to append to"):
        stoke.pack(arrays(0, 2), tmp_path / "nothing", append=True, progress=False)
    with pytest.raises(AppendError, match=r"remote dataset, and stoke appends only to a local directory"):
        stoke.pack(arrays(0, 2), "https://example.org/ds", append=True, progress=False)
    with pytest.raises(ConfigError, match=r"append and overwrite contradict each other"):
        stoke.pack(arrays(0, 2), tmp_path / "ds", append=True, overwrite=True, progress=False)
    old = tmp_path / "v1"
    shutil.copytree(Path(__file__).parents[1] / "format" / "data" / "v1-records", old)
    with pytest.raises(AppendError, match=r"format version 1.*--overwrite"):
        stoke.pack(arrays(0, 2), old, append=True, progress=False)


def test_an_overwrite_removes_the_versions_it_replaces(tmp_path):
    root = grown(tmp_path / "ds", 4, 4)
    stoke.pack(arrays(0, 3), root, overwrite=True, workers=1, progress=False)
    assert not (root / "versions").exists() and stoke.open(root).version == 1


def test_a_loader_state_of_the_old_version_says_to_open_it_to_finish_the_epoch(tmp_path):
    root = grown(tmp_path / "ds", 8)
    loader = stoke.Loader(stoke.open(root), batch_size=2, shuffle=True, seed=0)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    stoke.pack(arrays(8, 4), root, append=True, workers=1, progress=False)
    with pytest.raises(ConfigError, match=r"open the version the state was saved on, stoke.open\(path, version=N\)"):
        stoke.Loader(stoke.open(root), batch_size=2, shuffle=True, seed=0).load_state_dict(state)
    resumed = stoke.Loader(stoke.open(root, version=1), batch_size=2, shuffle=True, seed=0)
    resumed.load_state_dict(state)
    assert sum(len(batch["x"]) for batch in resumed) == 6


# ---- the command line ---------------------------------------------------------------------------------------


def test_stoke_pack_append_json_and_inspect_lists_the_versions(tmp_path):
    write_image_folder(tmp_path / "first", classes=2, per_class=2)
    write_image_folder(tmp_path / "second", classes=3, per_class=1)
    root = tmp_path / "ds"
    runner = CliRunner()
    assert runner.invoke(main, ["pack", str(tmp_path / "first"), str(root), "--no-progress"]).exit_code == 0
    shown = runner.invoke(main, ["pack", str(tmp_path / "second"), str(root), "--append", "--json"])
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout)
    assert result["version"] == 2 and result["num_samples"] == 3 and result["dataset_samples"] == 7
    listed = runner.invoke(main, ["inspect", str(root)])
    assert listed.exit_code == 0
    assert "version      2 of 2" in listed.stdout
    rows = [line.split() for line in listed.stdout.splitlines() if line.strip()[:1].isdigit()]
    assert rows[0][:6] == ["1", "4", "4", "1", "0", "when"] and rows[1][:5] == ["2", "(open)", "7", "3", "2"]
    summary = json.loads(runner.invoke(main, ["inspect", str(root), "--json"]).stdout)
    assert summary["version"] == 2 and [v["num_samples"] for v in summary["versions"]] == [4, 7]
    older = json.loads(runner.invoke(main, ["inspect", str(root), "--json", "--version", "1"]).stdout)
    assert older["version"] == 1 and older["num_samples"] == 4
    assert summarize(stoke.open(root))["versions"][1]["created"].endswith("Z")
    assert "2 (open)" in format_summary(summarize(stoke.open(root)))


def test_stoke_pack_append_refusals_are_one_line_with_exit_code_2(tmp_path):
    write_image_folder(tmp_path / "images", classes=2, per_class=2)
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    root = tmp_path / "ds"
    stoke.pack(tmp_path / "images", root, workers=1, progress=False)
    command = [sys.executable, "-m", "stoke", "pack", str(tmp_path / "rows.csv"), str(root), "--append"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("stoke: error: ") and "was not packed from a table" in done.stderr
    again = subprocess.run([*command[:-1], "--append", "--quality", "50"], capture_output=True, text=True)
    assert again.returncode == 2 and "quality=50 differs" in again.stderr
