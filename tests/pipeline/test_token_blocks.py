"""TokenBlocks: every token of the document stream in exactly one block, in order, boundaries marked;
and the Loader's attention mask for padded token fields."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stoke
from stoke.errors import ConfigError
from stoke.pipeline.blocks import token_counts
from stoke.sources import TextSource

LENGTHS = [0, 1, 2, 3, 5, 8, 13, 1, 0, 40, 7, 2, 30, 4, 1, 9]


def document(index: int) -> np.ndarray:
    return (np.arange(LENGTHS[index]) + 1000 * index).astype(np.uint16)


@pytest.fixture(scope="module")
def documents(tmp_path_factory) -> stoke.Dataset:
    root = tmp_path_factory.mktemp("blocks")
    records = [{"tokens": document(i), "label": i} for i in range(len(LENGTHS))]
    field = stoke.NDArrayField("uint16", (None,))
    stoke.pack(records, root / "ds", fields={"tokens": field}, shard_items=5, workers=1, progress=False)
    return stoke.open(root / "ds")


def reference_blocks(order, block_size, eos_id):
    """The slow, obvious version: build the whole stream, cut it."""
    tokens, documents, positions = [], [], []
    for index in order:
        ids = document(index).tolist() + ([] if eos_id is None else [eos_id])
        tokens += ids
        documents += [index] * len(ids)
        positions += list(range(len(ids)))
    count = len(tokens) // block_size
    cut = lambda values: [values[b * block_size : (b + 1) * block_size] for b in range(count)]  # noqa: E731
    return cut(tokens), cut(documents), cut(positions)


@settings(max_examples=60, deadline=None)
@given(
    order=st.lists(st.integers(0, len(LENGTHS) - 1), max_size=30),
    block_size=st.integers(1, 50),
    eos_id=st.one_of(st.none(), st.just(65535)),
)
def test_blocks_cover_the_stream_exactly_once_in_order(documents, order, block_size, eos_id):
    view = documents.select(order)  # any sequence of document lengths, repeats included
    blocks = stoke.TokenBlocks(view, block_size=block_size, eos_id=eos_id)
    tokens, docs, positions = reference_blocks(order, block_size, eos_id)
    assert len(blocks) == len(tokens)
    total = sum(LENGTHS[i] + (eos_id is not None) for i in order)
    assert blocks.total_tokens == total and blocks.dropped_tokens == total % block_size
    for b in range(len(blocks)):
        block = blocks[b]
        assert block["tokens"].tolist() == tokens[b]
        assert block["document"].tolist() == docs[b]
        assert block["position_ids"].tolist() == positions[b]
        # a boundary is wherever the document changes, and positions restart there
        starts = np.flatnonzero(np.diff(block["document"]) != 0) + 1
        assert (block["position_ids"][starts] == 0).all()
        assert set(block) == {"tokens", "document", "position_ids"}  # stream blocks have no padding


def aligned_reference(order, block_size, eos_id):
    """The obvious document-aligned packing: open a new block for a document that does not fit."""
    blocks, room = [], 0
    for index in order:
        ids = [
            (token, index, k) for k, token in enumerate(document(index).tolist() + ([] if eos_id is None else [eos_id]))
        ]
        if not ids:
            continue
        if len(ids) > room:
            blocks.append([])
            room = block_size
        while ids:
            if room == 0:
                blocks.append([])
                room = block_size
            piece, ids = ids[:room], ids[room:]
            blocks[-1] += piece
            room -= len(piece)
    return blocks


@settings(max_examples=60, deadline=None)
@given(
    order=st.lists(st.integers(0, len(LENGTHS) - 1), max_size=30),
    block_size=st.integers(1, 50),
    eos_id=st.one_of(st.none(), st.just(65535)),
)
def test_document_packing_keeps_documents_whole_and_every_token_once(documents, order, block_size, eos_id):
    blocks = stoke.TokenBlocks(documents.select(order), block_size=block_size, eos_id=eos_id, packing="documents",
                               pad_id=7, attention_mask=True)  # fmt: skip
    expected = aligned_reference(order, block_size, eos_id)
    assert len(blocks) == len(expected) and blocks.dropped_tokens == 0
    for b, want in enumerate(expected):
        block = blocks[b]
        real = ~block["padding"]
        assert real.tolist() == [True] * len(want) + [False] * (block_size - len(want))  # padding at the end
        assert block["tokens"][real].tolist() == [token for token, _, _ in want]
        assert (block["tokens"][~real] == 7).all() and (block["document"][~real] == -1).all()
        assert block["position_ids"][real].tolist() == [k for _, _, k in want]
        mask = block["attention_mask"]
        assert mask.shape == (block_size, block_size) and (mask == mask.T).all()
        docs, position = block["document"], block["position_ids"]
        # A new document where the id changes or its positions restart (a view may repeat a document).
        starts = np.r_[True, (docs[1:] != docs[:-1]) | (position[1:] == 0)]
        span = np.where(docs >= 0, np.cumsum(starts), -1)
        assert (mask == ((span[:, None] == span[None, :]) & (span >= 0)[:, None])).all()
        assert not mask[~real].any()  # padding attends to nothing and nothing attends to it


def test_counts_come_from_the_offsets_without_reading_tokens(documents):
    assert token_counts(documents, "tokens").tolist() == LENGTHS


def test_the_loader_delivers_every_block_once_per_epoch(documents):
    blocks = stoke.TokenBlocks(documents, block_size=8)
    loader = stoke.Loader(blocks, batch_size=3, shuffle=True, seed=1, num_threads=2)
    seen = []
    for batch in loader:
        assert batch["tokens"].shape[1] == 8 and batch["tokens"].dtype.is_floating_point is False
        for row, number in zip(batch["tokens"].tolist(), batch["index"].tolist()):
            assert row == blocks[number]["tokens"].tolist()
            seen.append(number)
    loader.close()
    assert sorted(seen) == list(range(len(blocks))) and seen != sorted(seen)


def test_negative_and_out_of_range_blocks(documents):
    blocks = stoke.TokenBlocks(documents, block_size=10)
    assert blocks[-1]["tokens"].tolist() == blocks[len(blocks) - 1]["tokens"].tolist()
    with pytest.raises(IndexError, match="out of range"):
        blocks[len(blocks)]


def test_only_one_dimensional_token_fields_make_blocks(documents, tmp_path):
    with pytest.raises(ConfigError, match="needs a 1-D ndarray field"):
        stoke.TokenBlocks(documents, field="label")
    with pytest.raises(ConfigError, match="block_size must be a positive integer"):
        stoke.TokenBlocks(documents, block_size=0)
    with pytest.raises(ConfigError, match="reads a packed dataset"):
        stoke.TokenBlocks([{"tokens": np.arange(3)}])
    with pytest.raises(ConfigError, match="packing must be one of"):
        stoke.TokenBlocks(documents, packing="greedy")


def test_padded_tokens_get_an_attention_mask(tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text("".join(json.dumps({"text": text}) + "\n" for text in ["abc", "", "héllo"]))
    stoke.pack(TextSource(corpus), tmp_path / "ds", progress=False, workers=1)
    batch = next(iter(stoke.Loader(stoke.open(tmp_path / "ds"), batch_size=3, shuffle=False)))
    assert batch["tokens_lengths"].tolist() == [3, 0, 6]
    assert batch["tokens_mask"].dtype == torch_bool() and batch["tokens_mask"].shape == (3, 6)
    assert batch["tokens_mask"].sum(dim=1).tolist() == [3, 0, 6]
    assert batch["tokens_mask"][2].all() and not batch["tokens_mask"][1].any()
    assert (batch["tokens"][~batch["tokens_mask"]] == 0).all()  # padding is zeros, masked out
    assert batch["text"] == ["abc", "", "héllo"]


def test_multidimensional_variable_fields_get_lengths_but_no_mask():
    records = [{"grid": np.ones((n, 2), np.float32)} for n in (1, 3)]
    batch = next(iter(stoke.Loader(records, batch_size=2, shuffle=False)))
    assert "grid_mask" not in batch and batch["grid_lengths"].tolist() == [[1, 2], [3, 2]]


def torch_bool():
    import torch

    return torch.bool
