"""stoke.mix through the Loader: where each row came from, exactly-once resume (also under new weights),
disjoint ranks with the proportions in every global batch, elastic world sizes, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import stoke
from stoke.errors import ConfigError


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mixture")
    made = {}
    for name, start, size in [("web", 0, 30), ("code", 1000, 7), ("books", 2000, 12)]:
        made[name] = root / name
        stoke.pack(
            {"x": np.arange(start, start + size, dtype=np.float64), "y": np.arange(size) % 3},
            made[name],
            progress=False,
            workers=1,
        )
    made["other"] = root / "other"
    stoke.pack({"x": np.arange(5.0), "z": np.arange(5)}, made["other"], progress=False, workers=1)
    made["typed"] = root / "typed"
    stoke.pack({"x": np.arange(5), "y": np.arange(5)}, made["typed"], progress=False, workers=1)  # int x
    return made


def mixture(roots: dict[str, Path], weights: dict[str, float] | None = None, **options) -> stoke.Mixture:
    return stoke.mix({name: roots[name] for name in ("web", "code", "books")}, weights or {"web": 2, "code": 1,
                     "books": 1}, **options)  # fmt: skip


def rows(batches) -> list[tuple[str, int]]:
    return [(source, int(index)) for batch in batches for source, index in zip(batch["source"], batch["index"])]


def test_every_row_says_its_source_and_index_and_holds_that_sample(roots) -> None:
    mix = mixture(roots, epoch_samples=40)
    loader = stoke.Loader(mix, batch_size=8, num_threads=2)
    opened = {name: stoke.open(roots[name]) for name in mix.names}
    seen = []
    for batch in loader:
        assert set(batch) == {"x", "y", "index", "source"}
        for source, index, x in zip(batch["source"], batch["index"].tolist(), batch["x"].tolist()):
            assert x == opened[source][index]["x"]
            seen.append(source)
    assert {name: seen.count(name) for name in mix.names} == mix.counts == {"web": 20, "code": 10, "books": 10}


def test_a_mixture_resumes_exactly_once_in_a_new_loader(roots) -> None:
    whole = rows(stoke.Loader(mixture(roots, epoch_samples=45), batch_size=4))
    loader = stoke.Loader(mixture(roots, epoch_samples=45), batch_size=4)
    iterator = iter(loader)
    first = rows([next(iterator) for _ in range(5)])
    state = json.loads(json.dumps(loader.state_dict()))  # small and JSON
    assert state["order"] == "MixtureOrder" and set(state["order_state"]) == {
        "seed",
        "sizes",
        "weights",
        "counts",
        "draws",
    }
    resumed = stoke.Loader(mixture(roots, epoch_samples=45), batch_size=4)
    resumed.load_state_dict(state)
    assert first + rows(resumed) == whole


def test_ranks_get_disjoint_shares_with_the_proportions_in_every_global_batch(roots) -> None:
    mix = mixture(roots, epoch_samples=48)
    shares = {name: count / len(mix) for name, count in mix.counts.items()}
    per_rank = [list(stoke.Loader(mix, batch_size=4, rank=r, world_size=3, drop_last=True)) for r in range(3)]
    everything = [row for batches in per_rank for row in rows(batches)]
    whole = rows(stoke.Loader(mix, batch_size=12))  # one rank, one global batch per step
    assert sorted(everything) == sorted(whole) and len(everything) == 48  # disjoint, and the whole epoch
    assert [row for step in range(4) for batches in per_rank for row in rows([batches[step]])] == whole
    for step in range(len(per_rank[0])):
        window = [source for batches in per_rank for source in batches[step]["source"]]  # one global batch
        for name, share in shares.items():
            assert abs(window.count(name) - share * len(window)) <= 1 + 3 * share


def test_an_elastic_resume_at_another_world_size_gives_exactly_the_rest(roots) -> None:
    whole = rows(stoke.Loader(mixture(roots, epoch_samples=48), batch_size=4))
    two = [stoke.Loader(mixture(roots, epoch_samples=48), batch_size=4, rank=r, world_size=2) for r in range(2)]
    iterators = [iter(loader) for loader in two]
    done = [row for _ in range(3) for iterator in iterators for row in rows([next(iterator)])]
    state = two[0].state_dict()
    assert state["samples_consumed"] == 24
    three = []
    for rank in range(3):
        loader = stoke.Loader(mixture(roots, epoch_samples=48), batch_size=4, rank=rank, world_size=3)
        loader.load_state_dict(state)
        three.extend(rows(loader))
    assert sorted(done + three) == sorted(whole) and len(done + three) == 48


def test_new_weights_finish_the_saved_epoch_as_it_began_and_apply_from_the_next(roots) -> None:
    loader = stoke.Loader(mixture(roots, epoch_samples=40), batch_size=4)
    original = [rows(loader) for _ in range(2)]  # epochs 0 and 1 as first run
    first_run = stoke.Loader(mixture(roots, epoch_samples=40), batch_size=4)
    iterator = iter(first_run)
    head = rows([next(iterator) for _ in range(3)])
    state = first_run.state_dict()
    reweighted = mixture(roots, {"web": 1, "code": 0, "books": 3}, epoch_samples=40)
    second_run = stoke.Loader(reweighted, batch_size=4)
    second_run.load_state_dict(state)
    assert head + rows(second_run) == original[0]  # the interrupted epoch, unchanged
    following = rows(second_run)
    counts = {name: [source for source, _ in following].count(name) for name in reweighted.names}
    assert counts == reweighted.counts == {"web": 10, "code": 0, "books": 30}
    # books continues its sequence where the first run's epoch 0 left it: none repeats before all were drawn
    drawn = [index for source, index in original[0] + following if source == "books"]
    for start in range(0, len(drawn) - 12 + 1, 12):
        assert sorted(drawn[start : start + 12]) == list(range(12))


def test_sources_may_be_views_and_splits_and_smaller_ones_cycle(roots) -> None:
    web = stoke.open(roots["web"])
    mix = stoke.mix({"even": web.select(range(0, 30, 2)), "tail": web[25:]}, weights={"even": 1, "tail": 1})
    got = rows(stoke.Loader(mix, batch_size=5))
    tail = [index for source, index in got if source == "tail"]
    assert len(tail) == 10 and sorted(tail) == sorted(list(range(5)) * 2)  # a 5-sample view, drawn twice
    assert all(source in ("even", "tail") for source, _ in got)


def test_fields_are_those_every_source_shares_or_a_sentence_names_the_gap(roots) -> None:
    shared = stoke.mix({"web": roots["web"], "other": roots["other"]})
    assert set(next(iter(stoke.Loader(shared, batch_size=2)))) == {"x", "index", "source"}
    with pytest.raises(ConfigError, match="field 'y' is missing from source 'other'"):
        stoke.Loader(shared, fields=["x", "y"])
    with pytest.raises(ConfigError, match=r"field 'x' is .* in source 'web' but .* in source 'typed'"):
        stoke.Loader(stoke.mix({"web": roots["web"], "typed": roots["typed"]}), batch_size=2)


def test_the_loaders_own_sampling_arguments_are_refused_for_a_mixture(roots) -> None:
    with pytest.raises(ConfigError, match="own weights"):
        stoke.Loader(mixture(roots), weights=np.ones(49))
    with pytest.raises(ConfigError, match="is a list"):
        stoke.mix({"web": [1, 2, 3]})
    with pytest.raises(ConfigError, match="weight for source 'code'"):
        stoke.mix({"web": roots["web"], "code": roots["code"]}, weights={"web": 1})


def test_a_damaged_sample_in_one_source_is_quarantined_naming_the_source(roots, tmp_path) -> None:
    import shutil

    damaged = tmp_path / "code"
    shutil.copytree(roots["code"], damaged)
    shard = next(damaged.glob("shard-*.stk"))
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF  # inside the last sample's record
    shard.write_bytes(bytes(data))
    mix = stoke.mix({"web": roots["web"], "code": damaged}, weights={"web": 1, "code": 1}, epoch_samples=14)
    loader = stoke.Loader(mix, batch_size=7, verify="always")
    got = rows(loader)
    assert len(got) == 13 and len(loader.quarantine) == 1
    record = loader.quarantine[0]
    assert record["index"] == 30 + 6  # the global id: web's sample 6 is another sample
    assert record["reason"].startswith("sample 6 ") and record["reason"].endswith("(source 'code')")
    assert ("code", 6) not in got


def test_token_blocks_of_two_corpora_mix_in_shares_of_tokens(tmp_path) -> None:
    field = stoke.NDArrayField("uint16", (None,))
    for name, lengths in [("long", [40, 25, 60, 33]), ("short", [3, 5, 2, 7, 4, 6])]:
        docs = [{"tokens": (np.arange(n) + 100 * k).astype(np.uint16)} for k, n in enumerate(lengths)]
        stoke.pack(docs, tmp_path / name, fields={"tokens": field}, progress=False, workers=1)
    blocks = {
        name: stoke.TokenBlocks(stoke.open(tmp_path / name), block_size=8, eos_id=0) for name in ("long", "short")
    }
    mix = stoke.mix(blocks, weights={"long": 1, "short": 1}, epoch_samples=12)
    loader = stoke.Loader(mix, batch_size=4)
    got = []
    for batch in loader:
        assert set(batch) == {"tokens", "document", "position_ids", "index", "source"}
        assert sorted(batch["source"]) == ["long", "long", "short", "short"]  # the shares in every batch
        for source, number, row in zip(batch["source"], batch["index"].tolist(), batch["tokens"].tolist()):
            assert row == blocks[source][number]["tokens"].tolist()
            got.append((source, number))
    short = [number for source, number in got if source == "short"]
    assert len(blocks["short"]) == 4 and len(short) == 6  # a smaller corpus than its share: it cycles
    assert sorted(short[:4]) == [0, 1, 2, 3] and len(set(short[4:])) == 2  # used up before any block repeats
    with pytest.raises(ConfigError, match="stores it alike"):  # variable uint16 tokens against blocks of 8
        stoke.Loader(stoke.mix({"blocks": blocks["long"], "packed": tmp_path / "short"}))
    stoke.pack({"tokens": np.zeros((3, 8), np.int64)}, tmp_path / "fixed", progress=False, workers=1)
    with pytest.raises(ConfigError, match="read as live values"):  # the same field, but stored and live
        stoke.Loader(stoke.mix({"blocks": blocks["long"], "packed": tmp_path / "fixed"}), fields=["tokens"])


def test_process_workers_give_the_same_batches_and_a_mixture_closes_what_it_opened(roots) -> None:
    with mixture(roots, epoch_samples=24) as threads_mix:
        threads = rows(stoke.Loader(threads_mix, batch_size=6, num_threads=2))
    with mixture(roots, epoch_samples=24) as processes_mix:
        loader = stoke.Loader(processes_mix, batch_size=6, num_threads=2, workers="process")
        processes = rows(loader)
        loader.close()
    assert processes == threads
    web = stoke.open(roots["web"])
    given = stoke.mix({"web": web, "code": roots["code"]})
    given.close()
    assert web[0]["x"] == 0.0  # a dataset it was given stays open


def test_a_source_that_grew_mid_epoch_is_refused_and_its_old_version_finishes_the_epoch(tmp_path) -> None:
    stoke.pack({"x": np.arange(20.0)}, tmp_path / "grows", progress=False, workers=1)
    stoke.pack({"x": np.arange(100.0, 110.0)}, tmp_path / "fixed", progress=False, workers=1)

    def make(grows):
        return stoke.mix(
            {"grows": grows, "fixed": tmp_path / "fixed"}, weights={"grows": 1, "fixed": 1}, epoch_samples=20
        )

    whole = rows(stoke.Loader(make(tmp_path / "grows"), batch_size=4))
    loader = stoke.Loader(make(tmp_path / "grows"), batch_size=4)
    iterator = iter(loader)
    head = rows([next(iterator), next(iterator)])
    state = loader.state_dict()
    stoke.pack({"x": np.arange(20.0, 30.0)}, tmp_path / "grows", append=True, progress=False, workers=1)
    grown = stoke.Loader(make(tmp_path / "grows"), batch_size=4)
    with pytest.raises(ConfigError, match="source 'grows' had 20 samples; it has 30 now"):
        grown.load_state_dict(state)
    pinned = stoke.Loader(make(stoke.open(tmp_path / "grows", version=1)), batch_size=4)
    pinned.load_state_dict(state)
    assert head + rows(pinned) == whole  # the old version finishes the epoch exactly
    at_the_end = pinned.state_dict()
    grown.load_state_dict(at_the_end)  # at an epoch's end the grown source is welcome
    assert sum(source == "grows" for source, _ in rows(grown)) == 10
