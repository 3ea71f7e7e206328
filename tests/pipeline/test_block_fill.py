"""TokenBlocks' chunk path: the compiled gather (``pipeline/_tokens.c``) fills whole rows straight from the
mapped shards, and must give exactly the arrays of the numpy reference, for every dtype, packing, view
and row order; through the Loader it must give the batches the row-by-row path gives; and damaged,
lying or truncated shards must fail only the blocks that read them, with errors naming the document.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import stoke
from stoke.errors import ConfigError, SampleError
from stoke.format import mapguard
from stoke.machine import available_cores
from stoke.pipeline import blocks as blocks_module
from stoke.pipeline.block_reader import BlockReader
from stoke.pipeline.mixture_reader import MixtureReader
from stoke.pipeline.produce import SampleProducer
from stoke.pipeline.reader import CheckedSamples
from stoke.storage import Retry
from storage.remote_servers import HttpDatasetServer

KERNEL = blocks_module._tokens
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="stoke's _tokens kernel is not compiled (no C compiler)")
HERE = Path(__file__).resolve().parent
DTYPES = ["uint8", "uint16", "int32", "uint32", "int64"]
NUM_DOCS = 40


def lengths() -> np.ndarray:
    rng = np.random.default_rng(7)
    sizes = rng.integers(0, 30, NUM_DOCS)
    sizes[[3, 17]] = 0, 95  # an empty document and one longer than most blocks
    return sizes


def pack_documents(root: Path, dtype: str, fixed: bool = False) -> Path:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(11)
    sizes = np.full(NUM_DOCS, 6) if fixed else lengths()
    docs = [
        {"tokens": rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), n, dtype=dtype, endpoint=True)}
        for n in sizes
    ]
    field = stoke.NDArrayField(dtype, (6,) if fixed else (None,))
    out = root / f"{dtype}{'-fixed' if fixed else ''}"
    stoke.pack(docs, out, fields={"tokens": field}, shard_items=7, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> dict[str, stoke.Dataset]:
    root = tmp_path_factory.mktemp("fill")
    datasets = {dtype: stoke.open(pack_documents(root, dtype)) for dtype in DTYPES}
    datasets["uint16-fixed"] = stoke.open(pack_documents(root, "uint16", fixed=True))
    return datasets


def reference(blocks: stoke.TokenBlocks, out: dict[str, np.ndarray], rows: np.ndarray, chosen: np.ndarray) -> None:
    """The numpy reference: each row through the fallback, one at a time."""
    starts, stops = blocks.spans(chosen)
    for row, start, stop in zip(rows.tolist(), starts.tolist(), stops.tolist()):
        blocks._numpy_fill(out, row, start, stop)


def empty_arrays(blocks: stoke.TokenBlocks, rows: int, ids: str) -> dict[str, np.ndarray]:
    """Each field's array of ``rows`` rows, ids of dtype ``ids`` ("stored": the tokens as stored, the rest int64)."""
    arrays = {}
    for name, field in blocks.fields.items():
        flag = field.spec.dtype == bool
        stored = (ids, name) == ("stored", "tokens")
        dtype = bool if flag else blocks.id_dtype if stored else ids.replace("stored", "int64")
        arrays[name] = np.full((rows, *field.spec.shape), True if flag else 99, dtype)
    return arrays


@needs_kernel
@settings(max_examples=120, deadline=None)
@given(
    kind=st.sampled_from([*DTYPES, "uint16-fixed"]),
    order=st.one_of(st.none(), st.lists(st.integers(0, NUM_DOCS - 1), min_size=1, max_size=60)),
    block_size=st.integers(1, 70),
    eos_id=st.one_of(st.none(), st.integers(0, 127)),
    packing=st.sampled_from(["stream", "documents"]),
    mask=st.booleans(),
    ids=st.sampled_from(["int64", "int32", "stored"]),
    seed=st.integers(0, 2**16),
    threads=st.sampled_from([(1, False), (2, False), (3, False), (2, True), (3, True)]),
)
def test_the_kernel_fills_exactly_what_the_numpy_reference_does(packed, kind, order, block_size, eos_id, packing,
                                                               mask, ids, seed, threads):  # fmt: skip
    # threads: (count, background): more than one thread shares a call's rows, 32 or more of them (or any
    # number in the background: start_fill), so shared calls get 32 to 80 rows.
    dataset = packed[kind] if order is None else packed[kind].select(order)  # views repeat and reorder documents
    blocks = stoke.TokenBlocks(dataset, block_size=block_size, eos_id=eos_id, packing=packing, attention_mask=mask)
    if len(blocks) == 0:
        return
    rng = np.random.default_rng(seed)
    count, background = threads
    chosen = rng.integers(0, len(blocks), rng.integers(1, 9) if count == 1 else rng.integers(32, 81))  # any order
    rows = rng.permutation(len(chosen) + 2)[: len(chosen)]  # rows of a larger batch, out of order
    got, want = empty_arrays(blocks, len(chosen) + 2, ids), empty_arrays(blocks, len(chosen) + 2, ids)
    blocks.start_fill(got, rows, chosen, count, background)()
    reference(blocks, want, rows, chosen)
    for name in want:
        assert np.array_equal(got[name][rows], want[name][rows]), name
        untouched = np.setdiff1d(np.arange(len(chosen) + 2), rows)
        assert np.array_equal(got[name][untouched], want[name][untouched]), f"{name}: rows not asked for changed"


def test_single_blocks_match_the_reference_without_the_kernel(packed, monkeypatch):
    blocks = stoke.TokenBlocks(packed["uint16"].select(range(NUM_DOCS - 1, -1, -1)), block_size=13, eos_id=5,
                               packing="documents", attention_mask=True)  # fmt: skip
    with_kernel = [blocks[b] for b in range(len(blocks))]
    monkeypatch.setattr(blocks_module, "_tokens", None)
    without = [blocks[b] for b in range(len(blocks))]
    for one, other in zip(with_kernel, without):
        assert one.keys() == other.keys()
        assert all(np.array_equal(one[name], other[name]) for name in one)


def epoch_rows(loader: stoke.Loader) -> dict[int, tuple]:
    rows = {}
    for batch in loader:
        for row, block in enumerate(batch["index"].tolist()):
            assert block not in rows, f"block {block} delivered twice"
            rows[block] = tuple(batch[name][row].numpy().tobytes() for name in sorted(batch) if name != "index")
    return rows


def kind_options(workers: str) -> dict:
    """Loader arguments for one executor kind: inline runs in the loop's thread, without a timeout, and
    (whatever the cores here) shares each batch's fill with a helper; "inline-1" without one."""
    if workers.startswith("inline"):
        return {"workers": "inline", "timeout": None, "num_threads": 1 if workers == "inline-1" else 2}
    return {"workers": workers, "num_threads": 2}


@pytest.mark.parametrize("workers", ["thread", "process", "inline", "inline-1"])
def test_the_loader_gives_the_same_batches_by_chunk_and_by_row(packed, workers, monkeypatch):
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=16, eos_id=3, packing="documents", attention_mask=True)
    options = kind_options(workers)
    by_chunk = epoch_rows(stoke.Loader(blocks, batch_size=5, shuffle=True, seed=1, **options))
    monkeypatch.setattr(SampleProducer, "produce_rows", lambda self, job, start, stop: False)  # row by row
    monkeypatch.setattr(SampleProducer, "start_rows", lambda self, job, start, stop, background=True: None)
    by_row = epoch_rows(stoke.Loader(blocks, batch_size=5, shuffle=True, seed=1, **options))
    assert sorted(by_chunk) == list(range(len(blocks)))
    assert by_chunk == by_row


@pytest.mark.parametrize("workers", ["thread", "inline"])
def test_the_chunk_path_is_taken(packed, workers, monkeypatch):
    calls = []
    original = BlockReader.start_fill

    def counted(self, positions, rows, arrays, threads=1, background=True):
        result = original(self, positions, rows, arrays, threads, background)
        calls.append((len(positions), result is not None, threads, background))
        return result

    monkeypatch.setattr(BlockReader, "start_fill", counted)
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=8)
    batches = list(stoke.Loader(blocks, batch_size=8, **kind_options(workers)))
    assert sum(len(batch["index"]) for batch in batches) == len(blocks)
    assert calls and all(filled for _, filled, _, _ in calls) and sum(n for n, *_ in calls) == len(blocks)
    # threads fill a batch each, alone and at once; inline, the loop's thread and a helper share each batch,
    # which the helper copies while the loop goes on
    expected = (1, False) if workers == "thread" else (2, True)
    assert all((threads, background) == expected for *_, threads, background in calls)


@pytest.mark.parametrize("kind", ["uint8", "uint16", "int32", "uint16-fixed"])
@pytest.mark.parametrize("workers", ["thread", "inline"])
def test_tokens_as_stored_int32_are_written_directly_and_other_dtypes_row_by_row(packed, kind, workers, monkeypatch):
    calls = []  # whether each batch was filled at once (begun: inline, in the background)
    original = SampleProducer.start_rows

    def counted(self, job, start, stop, background=True):
        finish = original(self, job, start, stop, background)
        calls.append(finish is not None)
        return finish

    monkeypatch.setattr(SampleProducer, "start_rows", counted)
    blocks = stoke.TokenBlocks(packed[kind], block_size=8, eos_id=7, packing="documents", pad_id=2)
    expected = np.stack([blocks[b]["tokens"] for b in range(len(blocks))])
    for dtype, directly in ((blocks.id_dtype, True), (np.dtype("int32"), True), (np.dtype("float32"), False)):
        calls.clear()
        loader = stoke.Loader(blocks, batch_size=6, transforms={"tokens": [stoke.ops.ToDtype(dtype)]},
                              **kind_options(workers))  # fmt: skip
        batches = list(loader)
        tokens = np.concatenate([batch["tokens"].numpy() for batch in batches])
        assert tokens.dtype == dtype
        assert np.array_equal(tokens, expected.astype(dtype))
        assert calls and all(calls) == directly and any(calls) == directly, dtype


def test_ids_copied_as_stored_are_widened_after_the_copy(packed, monkeypatch):
    """The recipe for a GPU: the buffer (and the copy to the device) at the stored width, int64 after it."""
    filled = []
    original = SampleProducer.produce_rows
    monkeypatch.setattr(SampleProducer, "produce_rows", lambda *args: filled.append(original(*args)) or filled[-1])
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=8, eos_id=3)
    default = list(stoke.Loader(blocks, batch_size=5, shuffle=True, seed=2))
    filled.clear()
    as_stored_then_widened = {"tokens": [stoke.ops.ToDtype(blocks.id_dtype), stoke.ops.ToDtype("int64")]}
    widened = stoke.Loader(blocks, batch_size=5, shuffle=True, seed=2, device="cpu", transforms=as_stored_then_widened)
    assert widened._stages[0].buffer_specs()["tokens"][1] == np.uint16
    batches = list(widened)
    assert filled and all(filled)  # the gather copied the stored ids
    assert all(got["tokens"].dtype == torch.int64 for got in batches)
    assert all(torch.equal(got["tokens"], want["tokens"]) for got, want in zip(batches, default, strict=True))


def test_a_batch_dtype_that_cannot_hold_the_ids_is_refused_when_the_loader_is_made(packed, tmp_path):
    def made(blocks, **transforms):
        return stoke.Loader(blocks, batch_size=4, transforms={name: [stoke.ops.ToDtype(dtype)]
                                                              for name, dtype in transforms.items()})  # fmt: skip

    blocks = stoke.TokenBlocks(packed["uint16"], block_size=8, eos_id=3)
    made(blocks, tokens="uint16", document="int32", position_ids="int16")  # all of them fit
    made(stoke.TokenBlocks(packed["uint32"], block_size=8), tokens="int32")  # int32 holds every vocabulary
    with pytest.raises(ConfigError, match=r"'tokens' .* as uint8, which cannot hold every id stored as uint16; .*"
                                          r"or as stored: stoke.ops.ToDtype\(blocks.id_dtype\)"):  # fmt: skip
        made(blocks, tokens="uint8")
    with pytest.raises(ConfigError, match=r"'tokens' .* as int16, which cannot hold every id stored as uint16"):
        made(blocks, tokens="int16")
    too_large = stoke.TokenBlocks(packed["uint16"], block_size=8, eos_id=70_000)
    with pytest.raises(ConfigError, match=r"cannot hold eos_id 70000; deliver it as int64 \(the default\) or int32$"):
        made(too_large, tokens="uint16")
    padded = stoke.TokenBlocks(packed["uint8"], block_size=8, packing="documents", pad_id=300)
    with pytest.raises(ConfigError, match="cannot hold pad_id 300"):
        made(padded, tokens="uint8")
    with pytest.raises(ConfigError, match=r"'document' .* as uint16, which cannot hold the document indices .* -1"):
        made(blocks, document="uint16")
    long = stoke.pack([np.zeros(300, np.uint16)], tmp_path / "long", names=["tokens"], progress=False,
                      fields={"tokens": stoke.NDArrayField("uint16", (None,))})  # fmt: skip
    with pytest.raises(ConfigError, match=r"'position_ids' .* as int8, which cannot hold the positions \(up to 300\)"):
        made(stoke.TokenBlocks(stoke.open(long.path), block_size=400), position_ids="int8")
    mixture = stoke.mix({"a": blocks, "b": too_large})
    made(mixture, tokens="int32")
    with pytest.raises(ConfigError, match="cannot hold eos_id 70000"):
        made(mixture, tokens="uint16")


def test_inline_workers_ask_for_timeout_none_and_share_only_a_batch_filled_at_once(packed):
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=8)
    with pytest.raises(ConfigError, match=r"a read that hangs cannot be timed out.*pass timeout=None"):
        stoke.Loader(blocks, batch_size=4, workers="inline")
    inline = {"workers": "inline", "timeout": None}
    stats = stoke.Loader(blocks, batch_size=4, **inline).stats()  # "auto": the cores, at most 4
    threads = min(available_cores(), 4)
    assert (stats["num_threads"], stats["prefetch"], stats["autotune"]) == (threads, 2 if threads > 1 else 1, None)
    assert stoke.Loader(blocks, batch_size=4, num_threads=3, **inline).stats()["num_threads"] == 3
    assert stoke.Loader(blocks, batch_size=4, num_threads=1, **inline).stats()["prefetch"] == 1  # nothing to overlap
    assert stoke.Loader(blocks, batch_size=4, num_threads=2, prefetch=3, **inline).stats()["prefetch"] == 3
    samples = {"x": np.arange(10.0)}  # made one by one: nothing to share, one batch ahead
    assert stoke.Loader(samples, batch_size=4, **inline).stats()["num_threads"] == 1
    assert stoke.Loader(samples, batch_size=4, **inline).stats()["prefetch"] == 1
    with pytest.raises(ConfigError, match=r"samples are made one by one, so num_threads=2 has no meaning"):
        stoke.Loader(samples, batch_size=4, num_threads=2, **inline)
    loader = stoke.Loader(blocks, batch_size=4, num_threads=2, **inline)
    assert len(list(loader)) == -(-len(blocks) // 4)
    with pytest.raises(ConfigError, match="cannot run 3"):
        loader._line.executor.resize(3)
    paths = loader._line.executor.cpu_stat_paths  # the loop's thread and the helper, for the profiler
    assert len(paths) >= 2 and all(Path(path).read_bytes().count(b" ") > 20 for path in paths)


def test_only_the_chosen_fields_are_filled(packed):
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=8, attention_mask=True)
    batch = next(iter(stoke.Loader(blocks, batch_size=4, fields=["tokens"])))
    assert set(batch) == {"tokens", "index"}
    with pytest.raises(ConfigError, match="must include 'tokens'"):
        stoke.Loader(blocks, batch_size=4, fields=["document"])


def flip_token_byte(root: Path, dataset: stoke.Dataset, document: int) -> None:
    """Change one stored id of ``document`` in place (its checksum then fails)."""
    blocks = stoke.TokenBlocks(dataset, block_size=4)
    shard, at = int(blocks._shard[document]), int(blocks._payload[document])
    path = root / dataset.manifest.shards[shard].file
    with open(path, "r+b") as stream:
        stream.seek(at)
        byte = stream.read(1)
        stream.seek(at)
        stream.write(bytes([byte[0] ^ 0x40]))


@pytest.mark.parametrize(("verify", "workers"), [("once", "thread"), ("always", "thread"), ("once", "inline")])
def test_a_damaged_document_fails_only_the_blocks_that_read_it(packed, tmp_path, verify, workers):
    root = Path(shutil.copytree(packed["uint16"].root, tmp_path / "ds"))
    victim = 17  # the long document: it spans several blocks
    flip_token_byte(root, stoke.open(root), victim)
    blocks = stoke.TokenBlocks(stoke.open(root), block_size=16, verify=False)
    reading = {b for b in range(len(blocks)) if victim in blocks[b]["document"]}
    assert len(reading) > 2
    loader = stoke.Loader(blocks, batch_size=6, shuffle=True, verify=verify, on_error="skip", **kind_options(workers))
    for _ in range(2):  # the second epoch: "once" keeps a document that failed unchecked, so it fails again
        delivered = epoch_rows(loader)
        assert sorted(delivered) == sorted(set(range(len(blocks))) - reading)
    assert sorted(record["index"] for record in loader.quarantine) == sorted(reading)
    reason = loader.quarantine[0]["reason"]
    assert "sample 17" in reason and "checksum" in reason, reason


def test_a_lying_record_header_is_caught_without_checksums(packed, tmp_path):
    root = Path(shutil.copytree(packed["uint16"].root, tmp_path / "ds"))
    dataset = stoke.open(root)
    blocks = stoke.TokenBlocks(dataset, block_size=16)
    shard, at = int(blocks._shard[5]), int(blocks._payload[5])
    with open(root / dataset.manifest.shards[shard].file, "r+b") as stream:
        stream.seek(at - 8)  # the record header's length, which the offsets contradict now
        stream.write((10**9).to_bytes(8, "little"))
    blocks = stoke.TokenBlocks(stoke.open(root), block_size=16, verify=False)
    with pytest.raises(SampleError, match=r"sample 5 .*does not hold the"):
        for b in range(len(blocks)):
            blocks[b]
    loader = stoke.Loader(blocks, batch_size=4, verify="never", on_error="skip")
    delivered = epoch_rows(loader)
    failed = sorted(record["index"] for record in loader.quarantine)
    assert failed and sorted(set(delivered) | set(failed)) == list(range(len(blocks)))


def test_the_store_is_held_per_call_where_shards_may_go(packed, monkeypatch):
    # Without the SIGBUS guard (or with a store that evicts shards) every call holds and checks its shards.
    blocks = stoke.TokenBlocks(packed["int32"], block_size=9, eos_id=1)
    expected = [blocks[b]["tokens"].copy() for b in range(len(blocks))]
    monkeypatch.setattr(mapguard, "available", lambda: False)
    held = []
    store = blocks._base.store
    original = store.open_shard
    monkeypatch.setattr(store, "open_shard", lambda number: held.append(number) or original(number))
    fresh = stoke.TokenBlocks(packed["int32"], block_size=9, eos_id=1)
    assert all(np.array_equal(fresh[b]["tokens"], expected[b]) for b in range(len(fresh)))
    assert len(held) >= len(fresh)  # at least one hold per block read


@needs_kernel
def test_the_kernel_refuses_what_does_not_fit(packed):
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=8)
    small = np.zeros((1, 8), np.int64)

    def gather(tokens, rows, starts, stops):
        as_int64 = [np.asarray(values, np.int64) for values in (rows, starts, stops)]
        return KERNEL.gather(tokens, None, None, None, None, *as_int64, blocks.ends, blocks.counts, blocks._payload,
                             blocks._shard, None, [None] * len(blocks._base.manifest.shards), "H", True, -1, 0, 8,
                             None)  # fmt: skip

    with pytest.raises(ValueError, match="fewer than 2 rows"):
        gather(small, [1], [0], [8])
    with pytest.raises(ValueError, match="asks for tokens"):
        gather(small, [0], [0], [9])  # longer than a block
    with pytest.raises(ValueError, match="asks for tokens"):
        gather(small, [0], [blocks.total_tokens], [blocks.total_tokens + 4])  # past the stream
    with pytest.raises(TypeError, match="writable"):
        gather(bytes(64), [0], [0], [8])
    with pytest.raises(ValueError, match="ids are int64, int32 or the stored type"):
        gather(np.zeros((1, 8), np.uint8), [0], [0], [8])  # narrower than the stored uint16
    assert gather(small, [0], [0], [8]) <= -2  # asks for the first shard's mapping


@needs_kernel
@settings(max_examples=40, deadline=None)
@given(hints=st.lists(st.integers(-3, NUM_DOCS + 3), min_size=0, max_size=12), seed=st.integers(0, 2**16))
def test_wrong_first_document_hints_are_searched_for_instead(packed, hints, seed):
    blocks = stoke.TokenBlocks(packed["uint16"].select([0, 3, 3, 1, 17, 2]), block_size=7, eos_id=1)
    chosen = np.random.default_rng(seed).integers(0, len(blocks), 6)
    rows, (starts, stops) = np.arange(6), blocks.spans(chosen)
    maps = [blocks._base.store.open_shard(s).mapping for s in range(len(blocks._base.manifest.shards))]

    def gathered(firsts, shards=None) -> np.ndarray | None:
        tokens = np.zeros((6, 7), np.int64)
        result = KERNEL.gather(tokens, None, None, None, None, rows, starts, stops, blocks.ends, blocks.counts,
                               blocks._payload, blocks._shard, blocks._ids, maps, "H", True, 1, 0, 7, None,
                               firsts, 1, False, shards)  # fmt: skip
        assert result == -1 or (shards is not None and 0 <= result < len(blocks.counts))
        return tokens if result == -1 else None  # a shard hint that does not hold fails the call: read row by row

    want = gathered(None)
    assert np.array_equal(gathered(blocks._firsts[chosen], blocks._one_shard[chosen]), want)
    assert np.array_equal(gathered(np.array(hints, np.int64)), want)  # fewer, wrong or out of range: searched
    lying = np.array(hints, np.int64).astype(np.int32) % (len(maps) + 3) - 1  # -1 (walk), a shard, or none
    got = gathered(np.array(hints, np.int64), lying)
    assert got is None or np.array_equal(got, want)  # never a wrong row


@settings(max_examples=60, deadline=None)
@given(counts=st.lists(st.integers(0, 6), min_size=1, max_size=30), shards=st.lists(st.integers(0, 3), min_size=30,
       max_size=30), block_size=st.integers(1, 9))  # fmt: skip
def test_each_block_knows_its_first_document_and_its_one_shard(counts, shards, block_size):
    counts_array = np.array(counts, np.int64)
    ends, shard = np.cumsum(counts_array), np.array(shards[: len(counts)], np.int32)  # shards in any order
    starts = np.arange(0, max(int(ends[-1]) - block_size + 1, 0), block_size, dtype=np.int64)
    stops = starts + block_size
    firsts, one = blocks_module._block_layout(ends, counts_array, shard, starts, stops)
    for b, (start, stop) in enumerate(zip(starts.tolist(), stops.tolist())):
        read = [d for d in range(len(counts)) if counts[d] > 0 and ends[d] - counts[d] < stop and ends[d] > start]
        assert firsts[b] == int(np.searchsorted(ends, start, side="right"))
        assert one[b] == (shard[read[0]] if len({int(shard[d]) for d in read}) == 1 else -1)


# ---- rows shared with the kernel's helper threads -----------------------------------------------------------
def kernel_gather(blocks: stoke.TokenBlocks, tokens: np.ndarray, rows, chosen, threads: int, background: bool):
    """One call of the kernel over ``chosen`` blocks into ``tokens`` (ids only), every shard mapped."""
    starts, stops = blocks.spans(np.asarray(chosen, np.int64))
    maps = [blocks._base.store.open_shard(s).mapping for s in range(len(blocks._base.manifest.shards))]
    return KERNEL.gather(tokens, None, None, None, None, np.asarray(rows, np.int64), starts, stops, blocks.ends,
                         blocks.counts, blocks._payload, blocks._shard, blocks._ids, maps, blocks._code,
                         not blocks._fixed, -1 if blocks.eos_id is None else blocks.eos_id, blocks.pad_id,
                         blocks.block_size, None, None, threads, background)  # fmt: skip


@needs_kernel
def test_rows_written_twice_are_written_in_order_by_one_thread(packed):
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=4, eos_id=1)
    rng = np.random.default_rng(3)
    chosen = rng.integers(0, len(blocks), 64)
    rows = rng.integers(0, 20, 64)  # rows repeat: the last block written to a row must win, as in order
    want = np.zeros((20, 4), np.int64)
    assert kernel_gather(blocks, want, rows, chosen, 1, False) == -1
    for background in (False, True):
        got = np.zeros((20, 4), np.int64)
        result = kernel_gather(blocks, got, rows, chosen, 3, background)
        assert (result if isinstance(result, int) else result.wait()) == -1
        assert np.array_equal(got, want)


@needs_kernel
def test_a_fill_left_in_the_background_is_finished_before_its_arrays_can_go(packed):
    blocks = stoke.TokenBlocks(packed["int32"], block_size=3)
    want = np.zeros((len(blocks), 3), np.int64)
    blocks.fill({"tokens": want}, np.arange(len(blocks)), np.arange(len(blocks)))
    for _ in range(20):
        got = np.zeros_like(want)
        pending = kernel_gather(blocks, got, np.arange(len(blocks)), np.arange(len(blocks)), 2, True)
        assert type(pending) is KERNEL.Pending
        del pending  # never waited for: dropping it waits (the helpers may not write into freed memory)
        assert np.array_equal(got, want)
    done = kernel_gather(blocks, np.zeros_like(want), np.arange(len(blocks)), np.arange(len(blocks)), 2, True)
    assert done.wait() == -1 and done.wait() == -1  # a second wait has nothing left to do
    with pytest.raises(ValueError, match="threads"):
        kernel_gather(blocks, np.zeros_like(want), [0], [0], 0, False)
    with pytest.raises(ValueError, match="threads"):
        kernel_gather(blocks, np.zeros_like(want), [0], [0], 65, False)


@needs_kernel
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), calls=st.integers(2, 7), dropped=st.sets(st.integers(0, 6)))
def test_calls_begun_together_share_the_helpers_and_finish_in_any_order(packed, seed, calls, dropped):
    """More calls in the background than the pool has slots: each is served by the helpers or, with every
    slot taken, filled by its caller at once; waited for in any order, or dropped, each is exactly right."""
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=3, eos_id=2)
    rng = np.random.default_rng(seed)
    chosen = [rng.integers(0, len(blocks), rng.integers(1, 90)) for _ in range(calls)]
    outs = [{"tokens": np.zeros((len(c), 3), np.uint16)} for c in chosen]
    finishes = [blocks.start_fill(out, np.arange(len(c)), c, 2, background=True) for out, c in zip(outs, chosen)]
    wide = [np.zeros((len(c), 3), np.int64) for c in chosen]  # and as many through the kernel itself
    pending = [kernel_gather(blocks, tokens, np.arange(len(c)), c, 3, True) for tokens, c in zip(wide, chosen)]
    for j in rng.permutation(calls).tolist():
        finishes[j]()
        if j in dropped:
            pending[j] = None  # dropped unwaited: its own helpers are waited for
        elif not isinstance(pending[j], int):
            assert pending[j].wait() == -1
    for out, tokens, c in zip(outs, wide, chosen):
        want = {"tokens": np.zeros((len(c), 3), np.uint16)}
        reference(blocks, want, np.arange(len(c)), c)
        assert np.array_equal(out["tokens"], want["tokens"]) and np.array_equal(tokens, want["tokens"])


@needs_kernel
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
def test_a_forked_child_fills_with_helpers_of_its_own(packed):
    """A child forked while the parent's helpers run has none (threads do not survive fork): the pool is
    reset there, and the child's own calls start their own helpers."""
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=2, eos_id=0)
    count = min(len(blocks), 200)
    want = np.zeros((count, 2), np.int64)
    blocks.fill({"tokens": want}, np.arange(count), np.arange(count), threads=2)  # the parent's helpers start
    pending = kernel_gather(blocks, np.zeros_like(want), np.arange(count), np.arange(count), 2, True)
    child = os.fork()  # a call of the parent's is still open: the child must not wait on it
    if child == 0:  # pragma: no cover - the child's result is its exit status
        signal.alarm(20)  # a child that hangs fails the test instead of stopping it
        ok = True
        for background in (False, True, True):
            got = np.zeros_like(want)
            result = kernel_gather(blocks, got, np.arange(count), np.arange(count), 2, background)
            ok &= (result if isinstance(result, int) else result.wait()) == -1 and np.array_equal(got, want)
        os._exit(0 if ok else 1)
    assert pending.wait() == -1
    _, status = os.waitpid(child, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_inline_helpers_give_the_batches_of_one_thread_and_resume_exactly(packed):
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=4, eos_id=0, packing="documents")
    mixture = stoke.mix({"a": blocks, "b": stoke.TokenBlocks(packed["int32"], block_size=4)}, seed=1)
    for source in (blocks, mixture):
        alone, shared = (stoke.Loader(source, batch_size=40, shuffle=True, seed=9, **kind_options(kind))
                         for kind in ("inline-1", "inline"))  # fmt: skip
        whole = token_rows(alone)
        assert token_rows(shared) == whole and token_rows(shared) == token_rows(alone)  # two epochs each
    loader = stoke.Loader(blocks, batch_size=40, shuffle=True, seed=9, **kind_options("inline"))
    iterator = iter(loader)
    first = token_rows([next(iterator) for _ in range(2)])  # the third is being copied in the background
    state = json.loads(json.dumps(loader.state_dict()))
    loader.close()  # finishes the batch begun, and keeps the epoch
    assert first + token_rows(loader) == token_rows(stoke.Loader(blocks, batch_size=40, shuffle=True, seed=9))
    resumed = stoke.Loader(blocks, batch_size=40, shuffle=True, seed=9, **kind_options("inline"))
    resumed.load_state_dict(state)
    assert first + token_rows(resumed) == token_rows(stoke.Loader(blocks, batch_size=40, shuffle=True, seed=9))


@pytest.mark.parametrize("workers", ["inline", "inline-1"])
def test_ctrl_c_while_the_loop_makes_a_batch_is_raised_as_it_is_and_loses_nothing(packed, workers, monkeypatch):
    """A KeyboardInterrupt in the loop's own thread while it makes a batch (inline: the fill, or the copy it
    finishes) is the user's: raised as it is, not as a sample's error, and the epoch's position is kept."""
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=4, eos_id=0)
    want = token_rows(stoke.Loader(blocks, batch_size=8, shuffle=True, seed=3))
    original, calls = BlockReader.start_fill, []

    def interrupted(self, *args, **kwargs):
        finish = original(self, *args, **kwargs)
        calls.append(finish)
        if len(calls) != 4 or finish is None:
            return finish

        def finish_then_interrupt() -> list:
            finish()
            raise KeyboardInterrupt  # as Python raises a Ctrl-C as the gather's wait() returns

        return finish_then_interrupt

    monkeypatch.setattr(BlockReader, "start_fill", interrupted)
    loader = stoke.Loader(blocks, batch_size=8, shuffle=True, seed=3, **kind_options(workers))
    got: list = []
    with pytest.raises(KeyboardInterrupt):
        for batch in loader:
            got.append(batch)
    assert len(got) == 3
    state = json.loads(json.dumps(loader.state_dict()))
    assert token_rows(got) + token_rows(loader) == want  # the same Loader goes on with the batch it lost
    resumed = stoke.Loader(blocks, batch_size=8, shuffle=True, seed=3, **kind_options(workers))
    resumed.load_state_dict(state)
    assert token_rows(got) + token_rows(resumed) == want


# ---- a shard truncated while mapped (in a subprocess: a regression would be SIGBUS) ----------------------
def truncated_scenario(root: str, workers: str = "thread") -> dict[str, Any]:
    dataset = stoke.open(root)
    blocks = stoke.TokenBlocks(dataset, block_size=16)
    first = {b: blocks[b]["tokens"].tolist() for b in range(len(blocks))}  # maps every shard
    cut = dataset.manifest.shards[1].file
    os.truncate(os.path.join(root, cut), os.path.getsize(os.path.join(root, cut)) // 2)
    loader = stoke.Loader(blocks, batch_size=4, verify="never", on_error="skip", **kind_options(workers))
    second = {}
    for batch in loader:
        for row, block in enumerate(batch["index"].tolist()):
            second[block] = batch["tokens"][row].tolist()
    return {
        "identical": all(second[b] == first[b] for b in second),
        "delivered": len(second),
        "blocks": len(blocks),
        "reasons": [record["reason"] for record in loader.quarantine],
        "cut": cut,
        "guarded": mapguard.available(),
    }


@pytest.mark.parametrize("workers", ["thread", "inline"])  # inline: helper threads copy, and fault, too
@pytest.mark.parametrize("guard", [True, False], ids=["guard", "fallback"])
def test_a_shard_truncated_under_the_kernel_fails_its_blocks_naming_it(packed, tmp_path, guard, workers):
    root = shutil.copytree(packed["uint16"].root, tmp_path / "ds")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("STOKE_MAPGUARD", None)
    if not guard:
        env["STOKE_MAPGUARD"] = "off"
    scenario = f"case.truncated_scenario({str(root)!r}, {workers!r})"
    code = f"import json, test_block_fill as case; print(json.dumps({scenario}))"
    completed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode != -signal.SIGBUS, completed.stderr[-3000:]
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    assert found["guarded"] is (guard and mapguard.available())
    assert found["identical"] and 0 < found["delivered"] < found["blocks"]
    assert found["reasons"] and all(found["cut"] in reason for reason in found["reasons"]), found["reasons"]


@pytest.mark.parametrize("workers", ["thread", "inline"])
def test_a_mixture_of_blocks_fills_by_chunk_as_by_row_and_names_the_source(packed, tmp_path, workers, monkeypatch):
    root = Path(shutil.copytree(packed["uint16"].root, tmp_path / "ds"))
    flip_token_byte(root, stoke.open(root), 17)
    web = stoke.TokenBlocks(stoke.open(root), block_size=16, verify=False)
    code = stoke.TokenBlocks(packed["int32"], block_size=16, eos_id=0)
    reading = {b for b in range(len(web)) if 17 in web[b]["document"]}

    def run() -> tuple[dict, list]:
        mixture = stoke.mix({"web": web, "code": code}, weights={"web": 2, "code": 1}, seed=3)
        loader = stoke.Loader(mixture, batch_size=6, on_error="skip", max_bad_fraction=0.5, **kind_options(workers))
        rows, failed = {}, []
        for batch in loader:
            for row, (source, index) in enumerate(zip(batch["source"], batch["index"].tolist())):
                rows.setdefault((source, index), []).append(batch["tokens"][row].numpy().tobytes())
        failed = sorted((record["index"], "source 'web'" in record["reason"]) for record in loader.quarantine)
        return rows, failed

    filled = []
    original = MixtureReader.start_fill
    monkeypatch.setattr(MixtureReader, "start_fill", lambda *args: filled.append(original(*args)) or filled[-1])
    by_chunk, failed = run()
    assert filled and all(result is not None for result in filled)  # every chunk filled by the sources' readers
    monkeypatch.setattr(SampleProducer, "produce_rows", lambda self, job, start, stop: False)
    monkeypatch.setattr(SampleProducer, "start_rows", lambda self, job, start, stop, background=True: None)
    by_row, failed_by_row = run()
    assert by_chunk == by_row and failed == failed_by_row
    assert failed and all(named for _, named in failed)
    assert not any(("web", block) in by_chunk for block in reading)  # the damaged document's blocks: none
    assert all(np.frombuffer(value[0], np.int64).tolist() == code[index]["tokens"].tolist()
               for (source, index), value in by_chunk.items() if source == "code")  # fmt: skip


@given(size=st.integers(0, 70), passed=st.sets(st.integers(0, 69)))
def test_checked_samples_hold_exactly_what_passed(size, passed):
    checked = CheckedSamples(size)
    passed = sorted(p for p in passed if p < size)
    for position in passed[: len(passed) // 2]:
        checked.add(position)
    mask = np.zeros(size, bool)
    mask[passed[len(passed) // 2 :]] = True
    checked.add_all(mask)
    assert checked.holds(np.arange(size, dtype=np.int64)).tolist() == [p in passed for p in range(size)]
    assert checked.complete() is (len(passed) == size)


def token_rows(batches) -> list[tuple[int, tuple[int, ...]]]:
    return [
        (block, tuple(tokens)) for batch in batches
        for block, tokens in zip(batch["index"].tolist(), batch["tokens"].tolist())
    ]  # fmt: skip


def test_blocks_resume_mid_epoch_and_across_world_sizes_with_every_token_once(packed):
    blocks = stoke.TokenBlocks(packed["uint16"], block_size=8, eos_id=0)
    stream = [token for b in range(len(blocks)) for token in blocks[b]["tokens"].tolist()]
    whole = token_rows(stoke.Loader(blocks, batch_size=4, shuffle=True, seed=5))
    assert sorted(token for _, tokens in whole for token in tokens) == sorted(stream)  # every token, once

    loader = stoke.Loader(blocks, batch_size=4, shuffle=True, seed=5)
    iterator = iter(loader)
    first = token_rows([next(iterator) for _ in range(3)])
    state = json.loads(json.dumps(loader.state_dict()))
    resumed = stoke.Loader(blocks, batch_size=4, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    assert first + token_rows(resumed) == whole  # exactly the rest, in order
    inline = stoke.Loader(blocks, batch_size=4, shuffle=True, seed=5, **kind_options("inline"))
    inline.load_state_dict(state)  # a state saved with threads, resumed inline: the same rest
    assert first + token_rows(inline) == whole

    two = [stoke.Loader(blocks, batch_size=3, shuffle=True, seed=5, rank=r, world_size=2) for r in range(2)]
    iterators = [iter(each) for each in two]
    done = [row for _ in range(2) for each in iterators for row in token_rows([next(each)])]
    state = two[0].state_dict()
    rest = []
    for rank in range(3):
        three = stoke.Loader(blocks, batch_size=3, shuffle=True, seed=5, rank=rank, world_size=3)
        three.load_state_dict(state)
        rest += token_rows(three)
    delivered = [block for block, _ in done + rest]
    padded = len(delivered) - len(blocks)  # a distributed epoch pads the last global batch with repeats
    assert set(delivered) == set(range(len(blocks))) and 0 <= padded < 9


@pytest.mark.parametrize("cache_shards", [None, 2])
def test_blocks_of_a_remote_dataset_are_those_of_the_local_one(packed, tmp_path, cache_shards):
    local = packed["uint16"]
    server = HttpDatasetServer(local.root.parent)
    try:
        size = None if cache_shards is None else cache_shards * max(s.file_size for s in local.manifest.shards)
        remote = stoke.open(server.url(local.root.name), cache_dir=tmp_path / "cache", cache_bytes=size,
                            retry=Retry(attempts=2, base_delay=0.01))  # fmt: skip
        assert remote.store.evicts
        blocks = {
            where: stoke.TokenBlocks(dataset, block_size=12, eos_id=2, packing="documents")
            for where, dataset in (("local", local), ("remote", remote))
        }
        batches = {
            where: epoch_rows(stoke.Loader(each, batch_size=4, shuffle=True, seed=9, num_threads=2))
            for where, each in blocks.items()
        }
        assert sorted(batches["remote"]) == list(range(len(blocks["local"])))
        assert batches["remote"] == batches["local"]
        remote.close()
    finally:
        server.stop()


def test_without_the_kernel_the_loader_gives_the_same_batches(packed, monkeypatch):
    blocks = stoke.TokenBlocks(packed["uint32"].select(range(0, NUM_DOCS, 2)), block_size=10, eos_id=9,
                               packing="documents", attention_mask=True)  # fmt: skip
    with_kernel = epoch_rows(stoke.Loader(blocks, batch_size=4, shuffle=True, seed=2))
    monkeypatch.setattr(blocks_module, "_tokens", None)  # what an install without a C compiler has
    assert epoch_rows(stoke.Loader(blocks, batch_size=4, shuffle=True, seed=2)) == with_kernel
    assert sorted(with_kernel) == list(range(len(blocks)))
