"""What a DataLoader user expects: the items' structure kept, dtypes layers take, DataLoader's arguments,
peeking at a batch, slicing, and a packed dataset inside torch's own DataLoader."""

from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import stoke
from helpers import photo
from stoke.errors import ConfigError
from stoke.ops import CenterCrop, Normalize, Resize, ToDtype
from stoke.pipeline.structure import TupleBatch


class Pairs(torch.utils.data.Dataset):
    """(features, label) tuples, as most hand-written Datasets return."""

    def __init__(self, size: int = 10) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        return np.full(3, index, np.float32), index % 2


class Tokens(torch.utils.data.Dataset):
    """Dicts with a variable-length uint16 token array."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, index: int):
        return {"tokens": np.arange(index + 1, dtype=np.uint16), "label": index}


def test_tuple_items_give_tuple_batches():
    loader = stoke.Loader(Pairs(), batch_size=4)
    batches = list(loader)
    assert all(isinstance(batch, tuple) and len(batch) == 2 for batch in batches)
    for features, labels in batches:  # the loop DataLoader users write
        assert features.shape[1:] == (3,) and features.dtype == torch.float32 and labels.dtype == torch.int64
    first_x, first_y = batches[0]
    assert first_x[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and first_y.tolist() == [0, 1, 0, 1]
    assert isinstance(batches[0], TupleBatch) and batches[0].index.tolist() == [0, 1, 2, 3]
    assert pickle.loads(pickle.dumps(batches[0])).extras["index"].tolist() == [0, 1, 2, 3]


def test_names_make_dict_batches_and_positions_key_transforms():
    named = next(iter(stoke.Loader(Pairs(), batch_size=4, names=["x", "y"])))
    assert set(named) == {"x", "y", "index"} and named["y"].tolist() == [0, 1, 0, 1]
    arrays = next(iter(stoke.Loader((np.arange(4.0), np.arange(4)), batch_size=4, names=["a", "b"])))
    assert set(arrays) == {"a", "b", "index"}


def test_names_are_refused_for_a_packed_dataset_whose_fields_have_names(photos):
    with pytest.raises(ConfigError, match=r"names= names the values of tuple items; .* choose among them with fields="):
        stoke.Loader(photos, batch_size=2, names=["a", "b"])


def test_positions_and_single_ops_key_transforms():
    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return Image.fromarray(photo(20 + index, 24, seed=index)), index

    images, labels = next(iter(stoke.Loader(Images(), batch_size=4, transforms={0: CenterCrop(8)})))
    assert images.shape == (4, 3, 8, 8) and labels.tolist() == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match=r"transforms\['image'\] must be a stoke op or a list of them"):
        stoke.Loader(Images(), batch_size=2, transforms={"image": "resize"})
    with pytest.raises(ConfigError, match=r"transforms names position 5, but the items have 2 loaded fields"):
        stoke.Loader(Images(), batch_size=2, transforms={5: [CenterCrop(8)]})


def test_dicts_stay_dicts_and_single_values_stay_values():
    batch = next(iter(stoke.Loader(Tokens(), batch_size=3)))
    assert isinstance(batch, dict) and {"tokens", "tokens_lengths", "tokens_mask", "label", "index"} <= set(batch)
    values = stoke.Loader([torch.tensor([i, i]) for i in range(5)], batch_size=2)
    assert [b.tolist() for b in values] == [[[0, 0], [1, 1]], [[2, 2], [3, 3]], [[4, 4]]]
    arrays = next(iter(stoke.Loader((np.arange(4.0), np.arange(4)), batch_size=4)))
    assert isinstance(arrays, tuple) and arrays[0].dtype == torch.float32
    assert isinstance(next(iter(stoke.Loader(np.arange(4.0), batch_size=2))), torch.Tensor)


def test_token_ids_are_int64_and_feed_an_embedding():
    batch = next(iter(stoke.Loader(Tokens(), batch_size=6)))
    assert batch["tokens"].dtype == torch.int64  # stored as uint16
    embedded = torch.nn.Embedding(16, 4)(batch["tokens"])
    assert embedded.shape == (6, 6, 4)


def test_float_fields_are_float32_unless_todtype_asks(tmp_path):
    values = np.array([0.1, 1 / 3, 2.5, -7.25])
    stoke.pack({"v": values, "arr": np.stack([values, values], 1)}, tmp_path / "ds", progress=False, workers=1)
    dataset = stoke.open(tmp_path / "ds")
    batch = next(iter(stoke.Loader(dataset, batch_size=4)))
    assert batch["v"].dtype == torch.float32 and batch["arr"].dtype == torch.float32
    assert torch.nn.Linear(2, 1)(batch["arr"]).shape == (4, 1)
    exact = next(iter(stoke.Loader(dataset, batch_size=4, transforms={"v": [ToDtype(torch.float64)]})))
    assert exact["v"].dtype == torch.float64 and exact["v"].tolist() == values.tolist()  # every bit kept


def test_a_table_gets_a_float32_features_tensor(tmp_path):
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame.rename(columns={"target": "label"})
    wine.to_csv(tmp_path / "wine.csv", index=False)
    stoke.pack(tmp_path / "wine.csv", tmp_path / "ds", progress=False, workers=1)
    dataset = stoke.open(tmp_path / "ds")
    loader = stoke.Loader(dataset, batch_size=16, shuffle=True)
    batch = next(iter(loader))
    numeric = [name for name in dataset.fields if name != "label"]
    assert batch["features"].shape == (16, len(numeric)) and batch["features"].dtype == torch.float32
    rows = batch["index"].tolist()
    expected = wine.drop(columns="label").to_numpy(np.float32)[rows]
    np.testing.assert_allclose(batch["features"].numpy(), expected, rtol=1e-6)
    logits = torch.nn.Linear(len(numeric), 3)(batch["features"])
    torch.nn.functional.cross_entropy(logits, batch["label"]).backward()  # standard layers take it as it is
    chosen = next(iter(stoke.Loader(dataset, batch_size=4, batch_transforms=[stoke.ops.Features(["alcohol"])])))
    assert chosen["features"].shape == (4, 1)
    labels_only = next(iter(stoke.Loader(dataset, batch_size=4, fields=["label"])))
    assert set(labels_only) == {"label", "index"}  # no numeric column loaded: no empty features tensor


def test_dataloader_arguments_are_translated_or_answered():
    loader = stoke.Loader(Pairs(40), batch_size=4, num_workers=3, prefetch_factor=2, persistent_workers=True)
    assert (loader.num_threads, loader.prefetch) == (3, 6)
    assert stoke.Loader(Pairs(), batch_size=2, num_workers=0).num_threads == 1
    seeded = stoke.Loader(Pairs(), batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(7))
    assert seeded.seed == 7
    with pytest.warns(UserWarning, match=r"pin_memory=True, but no CUDA device is available"):
        stoke.Loader(Pairs(), batch_size=2, pin_memory=True)
    assert stoke.Loader(Pairs(), batch_size=2, timeout=0).timeout is None  # DataLoader's "wait forever"
    answers = {
        "sampler": r"no sampler=: stoke orders samples itself .* weights=",
        "batch_sampler": r"no batch_sampler=: .* batch_size= and drop_last=",
        "worker_init_fn": r"no worker_init_fn=: stoke's workers are threads",
        "multiprocessing_context": r"always forked",
    }
    for name, message in answers.items():
        with pytest.raises(ConfigError, match=message):
            stoke.Loader(Pairs(), batch_size=2, **{name: object()})
    with pytest.raises(ConfigError, match=r"no argument 'batchsize'; did you mean batch_size="):
        stoke.Loader(Pairs(), batchsize=2)
    with pytest.raises(ConfigError, match=r"give num_threads= or DataLoader's num_workers=, not both"):
        stoke.Loader(Pairs(), batch_size=2, num_threads=2, num_workers=2)


def test_shuffle_is_off_by_default_as_in_dataloader():
    loader = stoke.Loader(Pairs(10), batch_size=5)
    assert [batch.index.tolist() for batch in loader] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [batch.index.tolist() for batch in loader] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_collate_fn_gets_samples_shaped_like_the_items():
    def pad_collate(samples):
        assert isinstance(samples, list) and isinstance(samples[0], dict)
        assert [len(sample["tokens"]) for sample in samples] == [1, 2, 3]  # each cut to its own length
        tokens = torch.nn.utils.rnn.pad_sequence([s["tokens"] for s in samples], batch_first=True, padding_value=-1)
        return tokens, torch.stack([s["label"] for s in samples])

    tokens, labels = next(iter(stoke.Loader(Tokens(), batch_size=3, collate_fn=pad_collate)))
    assert tokens.tolist() == [[0, -1, -1], [0, 1, -1], [0, 1, 2]] and labels.tolist() == [0, 1, 2]
    pairs = next(iter(stoke.Loader(Pairs(), batch_size=2, collate_fn=lambda samples: samples)))
    assert isinstance(pairs[0], tuple) and pairs[1][1].item() == 1
    with pytest.raises(ConfigError, match=r"collate_fn must be callable"):
        stoke.Loader(Pairs(), batch_size=2, collate_fn="stack")


def test_peeking_at_a_batch_skips_nothing(photos):
    loader = stoke.Loader(photos, batch_size=4, shuffle=True, fields=["label"])
    peeked = next(iter(loader))["index"].tolist()
    assert loader.state_dict()["epoch"] == 0  # the peek did not use up epoch 0
    rest = [i for batch in loader for i in batch["index"].tolist()]
    assert sorted(peeked + rest) == list(range(len(photos)))  # the epoch continued: no sample skipped or repeated
    assert loader.state_dict() == {**loader.state_dict(), "epoch": 1, "samples_consumed": 0}
    # a look that consumes nothing: the state around it
    state = loader.state_dict()
    look = next(iter(loader))["index"].tolist()
    loader.load_state_dict(state)
    assert [i for batch in loader for i in batch["index"].tolist()][:4] == look


def test_a_loop_that_breaks_continues_the_epoch_when_iterated_again(photos):
    loader = stoke.Loader(photos, batch_size=2, fields=["label"], num_threads=2)
    seen = []
    for step, batch in enumerate(loader):
        seen += batch["index"].tolist()
        if step == 2:
            break
    loader.close()  # closing keeps the position too
    seen += [i for batch in loader for i in batch["index"].tolist()]
    assert seen == list(range(len(photos)))


def test_slices_and_index_lists_give_views(photos):
    view = photos[2:8:2]
    assert isinstance(view, stoke.DatasetView) and len(view) == 3
    assert view[1]["label"] == photos[4]["label"] and view[-1]["label"] == photos[6]["label"]
    assert [photos[[5, 0, -1]][k]["path"] for k in range(3)] == [photos[i]["path"] for i in (5, 0, len(photos) - 1)]
    mask = np.zeros(len(photos), bool)
    mask[[1, 3]] = True
    assert photos[mask].indices.tolist() == [1, 3] and photos[np.array([3, 1])].indices.tolist() == [3, 1]
    assert view[1:].indices.tolist() == [4, 6] and len(photos[5:5]) == 0
    with pytest.raises(IndexError, match=r"indices must lie in"):
        photos[[0, len(photos)]]
    with pytest.raises(TypeError, match=r"integers, slices or lists of integers, not str"):
        photos["label"]
    with pytest.raises(IndexError, match=r"out of range"):
        view[3]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_packed_dataset_in_torchs_own_dataloader(tmp_path, method):
    x = np.arange(24 * 3, dtype=np.float32).reshape(24, 3)
    stoke.pack({"x": x, "y": np.arange(24) * 10}, tmp_path / "ds", shard_items=5, progress=False, workers=1)
    dataset = stoke.open(tmp_path / "ds")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=4, num_workers=2, multiprocessing_context=multiprocessing.get_context(method)
    )
    batches = list(loader)
    assert torch.cat([b["y"] for b in batches]).tolist() == [i * 10 for i in range(24)]
    np.testing.assert_array_equal(torch.cat([b["x"] for b in batches]).numpy(), x)


def test_an_int_resize_that_leaves_sizes_varying_says_why(image_folder, tmp_path):
    stoke.pack(image_folder, tmp_path / "ds", progress=False, workers=1)
    with pytest.raises(ConfigError, match=r"Resize\(64\) sets only the shorter side .* stoke.ops.Resize\(\(64, 64\)\)"):
        stoke.Loader(
            stoke.open(tmp_path / "ds"),
            batch_size=2,
            transforms={"image": [Resize(64), Normalize([0.5] * 3, [0.5] * 3)]},
        )
