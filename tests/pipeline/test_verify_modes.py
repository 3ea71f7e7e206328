"""verify="once" | "always" | "never": which reads check a sample's checksum, in threads and processes."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

import stoke
from stoke.errors import ConfigError
from stoke.pipeline.reader import CheckedSamples, verify_mode


def damage(dataset: Path, value: np.ndarray) -> None:
    """Flip one byte inside the stored bytes of ``value``, in place (the Loader's mapping sees it)."""
    needle = value.tobytes()
    for shard in sorted(dataset.glob("shard-*")):
        offset = shard.read_bytes().find(needle)
        if offset >= 0:
            with shard.open("r+b") as stream:
                stream.seek(offset + 5)
                byte = stream.read(1)[0]
                stream.seek(offset + 5)
                stream.write(bytes([byte ^ 0x40]))
            return
    raise AssertionError("value not found in any shard")


def epoch(loader: stoke.Loader) -> dict[int, np.ndarray]:
    return {i: row for batch in loader for i, row in zip(batch["index"].tolist(), batch["v"].numpy())}


@pytest.mark.parametrize("workers", ["thread", "process"])
def test_once_checks_each_sample_at_its_first_read_and_never_marks_a_damaged_one(tmp_path, workers):
    values = np.arange(40 * 16, dtype=np.float32).reshape(40, 16)
    stoke.pack({"v": values}, tmp_path / "ds", shard_items=10, progress=False)
    damage(tmp_path / "ds", values[3])  # damaged before training starts
    loaders = {
        mode: stoke.Loader(
            stoke.open(tmp_path / "ds"),
            batch_size=8,
            on_error="skip",
            max_bad_fraction=1.0,
            verify=mode,
            workers=workers,
            num_threads=2,
        )
        for mode in ("once", "always", "never")
    }
    first = {mode: epoch(loader) for mode, loader in loaders.items()}
    for mode in ("once", "always"):
        assert set(first[mode]) == set(range(40)) - {3}
        assert [record["index"] for record in loaders[mode].quarantine] == [3]
    assert set(first["never"]) == set(range(40))  # unchecked: the damaged value is delivered as stored
    assert not np.array_equal(first["never"][3], values[3])

    damage(tmp_path / "ds", values[7])  # bytes that change on disk during training
    second = {mode: epoch(loader) for mode, loader in loaders.items()}
    assert set(second["always"]) == set(range(40)) - {3, 7}
    assert set(second["once"]) == set(range(40)) - {3}  # 3 is checked again (it never passed); 7 passed before
    assert not np.array_equal(second["once"][7], values[7])
    for index in set(range(40)) - {3, 7}:
        np.testing.assert_array_equal(second["once"][index], values[index])
    for loader in loaders.values():
        loader.close()


def _mark(checked: CheckedSamples, positions: list[int]) -> None:
    for position in positions:
        checked.add(position)


def test_checked_samples_are_shared_with_forked_workers():
    checked = CheckedSamples(1000)
    checked.add(0)
    child = multiprocessing.get_context("fork").Process(target=_mark, args=(checked, [1, 9, 999]))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert [p for p in range(1000) if p in checked] == [0, 1, 9, 999]


def test_verify_modes_are_validated():
    assert [verify_mode(v) for v in (True, False, "once", "always", "never")] == [
        "always",
        "never",
        "once",
        "always",
        "never",
    ]
    with pytest.raises(ConfigError, match="verify must be"):
        stoke.Loader(np.arange(4), batch_size=2, verify="sometimes")
