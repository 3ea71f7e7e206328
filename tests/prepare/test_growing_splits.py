"""Splits of a dataset that grows (docs/growing.md): no sample ever moves between splits.

The property test appends to a dataset several times, running ``make_splits`` after some of the appends
and not after others, and checks after every step: every sample split before keeps its split (and every
duplicate left out stays out), no sample is in two splits, every sample is split or left out once the
splits are extended, the leakage report is exactly the groups of identical content that span splits
(none with ``dedupe``), and each older version sees its own samples' splits. The other tests pin the
rules around it: stored settings, ``fresh``, splits read at an older version, and the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stoke
from stoke.cli import main
from stoke.errors import ConfigError
from stoke.prepare.split import growing_settings, make_splits

FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def batch(rng: np.random.Generator, start: int, size: int, distinct: int) -> dict[str, np.ndarray]:
    """``size`` samples whose content ``x`` repeats (leaks); ``id`` (an identity, not content) makes each batch
    differ from every other, which an append needs (the same source appended again adds nothing)."""
    ids = np.arange(start, start + size)
    return {"x": rng.integers(0, distinct, size), "label": rng.integers(0, 2, size), "id": ids}


def assignment(dataset) -> dict[int, str]:
    """Each split sample's split, by dataset index."""
    return {int(index): name for name, part in dataset.splits().parts.items() for index in part.tolist()}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    first=st.integers(6, 30),
    appends=st.lists(st.tuples(st.integers(1, 15), st.booleans()), min_size=1, max_size=3),
    distinct=st.integers(3, 40),
    dedupe=st.booleans(),
    stratify=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_appends_never_move_a_sample_between_splits(tmp_path_factory, first, appends, distinct, dedupe, stratify, seed):
    rng = np.random.default_rng(seed)
    root = tmp_path_factory.mktemp("grow") / "ds"
    stoke.pack(batch(rng, 0, first, distinct), root, shard_items=8, workers=1, progress=False)
    options = {"seed": seed % 5, "stratify": "label" if stratify else None, "dedupe": dedupe}
    make_splits(stoke.open(root), FRACTIONS, **options)
    placed = assignment(stoke.open(root))
    left_out = set(range(first)) - set(placed)
    sizes = [first]
    for size, split_now in appends:
        stoke.pack(batch(rng, sizes[-1], size, distinct), root, append=True, shard_items=8, workers=1, progress=False)
        sizes.append(sizes[-1] + size)
        dataset = stoke.open(root)
        if split_now:
            report = make_splits(dataset, FRACTIONS, **options)
            assert report.kept == len(placed)
        now = assignment(stoke.open(root))
        assert {index: now[index] for index in placed} == placed, "a sample moved to another split"
        assert not left_out & set(now), "a duplicate left out was put in a split"
        parts = stoke.open(root).splits().parts
        every = np.concatenate(list(parts.values()))
        assert np.unique(every).size == every.size, "a sample is in two splits"
        x = dataset.column("x")
        if split_now:
            assert stoke.open(root).splits().added == 0
            dropped = set(range(len(dataset))) - set(now)
            assert sorted(dropped) == sorted(report.dropped)
            if dedupe:  # only later copies are left out, and no content spans splits
                assert all(x[index] in x[:index] for index in dropped)
                assert report.leaks == []
            else:
                assert not dropped
                spans = {value for value in np.unique(x) if len({now[i] for i in np.flatnonzero(x == value)}) > 1}
                assert {int(x[leak["samples"][next(iter(leak["samples"]))][0]]) for leak in report.leaks} == spans
            left_out = dropped
        else:
            assert stoke.open(root).splits().added == sizes[-1] - len(placed) - len(left_out)
        placed = now
        for version, count in enumerate(sizes, start=1):  # every older version sees its own samples' splits
            older = assignment(stoke.open(root, version=version))
            assert older == {index: name for index, name in now.items() if index < count}


@pytest.fixture
def grown(tmp_path: Path) -> Path:
    """40 samples split at version 1 (seed 7, stratified by label), then 20 appended: version 2."""
    root = tmp_path / "ds"
    values = np.arange(60)
    stoke.pack({"x": values[:40], "label": values[:40] % 2}, root, workers=1, progress=False)
    make_splits(stoke.open(root), {"train": 0.75, "val": 0.25}, seed=7, stratify="label")
    stoke.pack({"x": values[40:], "label": values[40:] % 2}, root, append=True, workers=1, progress=False)
    return root


def test_splits_made_before_an_append_still_open_and_leave_the_new_samples_out(grown):
    dataset = stoke.open(grown)
    splits = dataset.splits()
    assert splits.added == 20 and sum(part.size for part in splits.parts.values()) == 40
    assert len(stoke.open(grown, split="train")) == 30 and max(stoke.open(grown, split="train").indices) < 40
    summary = json.loads(CliRunner().invoke(main, ["inspect", str(grown), "--json"]).stdout)
    assert summary["splits"]["unassigned"] == 20
    shown = CliRunner().invoke(main, ["inspect", str(grown)]).stdout
    assert "20 samples appended since are in no split: `stoke split` adds them" in shown


def test_extending_takes_the_stored_settings_and_refuses_others_unless_fresh(grown):
    assert growing_settings(stoke.open(grown)) == {
        "fractions": {"train": 0.75, "val": 0.25},
        "seed": 7,
        "stratify": "label",
        "stratify_bins": None,
        "dedupe": False,
        "content": ["x"],
    }
    before = assignment(stoke.open(grown))
    with pytest.raises(ConfigError, match=r"made with seed=7; its 20 samples added since are split the same way"):
        make_splits(stoke.open(grown), {"train": 0.75, "val": 0.25}, seed=8, stratify="label")
    assert assignment(stoke.open(grown)) == before  # nothing written
    report = make_splits(stoke.open(grown), {"train": 0.75, "val": 0.25}, seed=7, stratify="label")
    # each class of the 20 new samples (10 and 10) is cut at 0.75 by the same rule: 8 and 2 of each
    assert (report.kept, report.added, report.counts) == (40, 20, {"train": 46, "val": 14})
    assert report.balance == {"train": {0: 23, 1: 23}, "val": {0: 7, 1: 7}}
    again = make_splits(stoke.open(grown), {"train": 0.5, "val": 0.5}, seed=1)  # covers every sample: replaced
    assert again.counts == {"train": 30, "val": 30} and again.kept == 0
    stoke.pack({"x": np.arange(60, 64), "label": np.arange(4) % 2}, grown, append=True, workers=1, progress=False)
    fresh = make_splits(stoke.open(grown), {"train": 0.5, "val": 0.5}, seed=2, fresh=True)
    assert fresh.counts == {"train": 32, "val": 32} and fresh.kept == 0


def test_splits_made_on_a_later_version_are_cut_to_an_older_one_and_never_rewritten_from_it(grown):
    make_splits(stoke.open(grown), {"train": 0.75, "val": 0.25}, seed=7, stratify="label")
    newest = assignment(stoke.open(grown))
    assert assignment(stoke.open(grown, version=1)) == {i: name for i, name in newest.items() if i < 40}
    with pytest.raises(ConfigError, match=r"were made on a later version .* split the newest version"):
        make_splits(stoke.open(grown, version=1), {"train": 0.75, "val": 0.25}, seed=7, stratify="label")


def test_splits_written_before_versions_existed_still_apply_after_the_dataset_grows(tmp_path):
    root = tmp_path / "ds"
    stoke.pack({"x": np.arange(10)}, root, workers=1, progress=False)
    make_splits(stoke.open(root), {"train": 0.5, "val": 0.5})
    document = json.loads((root / "splits.json").read_text())
    for key in ("chain", "version", "num_samples", "dedupe"):  # as an older stoke wrote them
        document.pop(key)
    (root / "splits.json").write_text(json.dumps(document))
    parts = {name: part.tolist() for name, part in stoke.open(root).splits().parts.items()}
    stoke.pack({"x": np.arange(10, 14)}, root, append=True, workers=1, progress=False)
    assert {name: part.tolist() for name, part in stoke.open(root).splits().parts.items()} == parts
    assert stoke.open(root).splits().added == 4


def test_stoke_split_on_a_grown_dataset_extends_with_the_stored_settings(grown):
    runner = CliRunner()
    refused = runner.invoke(main, ["split", str(grown), "--seed", "3"], prog_name="stoke")
    assert refused.exit_code == 2 and "no sample ever moves" in refused.output and refused.output.count("\n") == 1
    shown = runner.invoke(main, ["split", str(grown)], prog_name="stoke")
    assert shown.exit_code == 0, shown.output
    assert "kept the split of each of the 40 samples already split (none moved); split the 20" in shown.output
    assert stoke.open(grown).splits().info["seed"] == 7 and stoke.open(grown).splits().added == 0
    fresh = runner.invoke(main, ["split", str(grown), "--train", "0.5", "--val", "0.5", "--fresh", "--json"])
    assert fresh.exit_code == 0 and json.loads(fresh.stdout)["counts"] == {"train": 30, "val": 30}
