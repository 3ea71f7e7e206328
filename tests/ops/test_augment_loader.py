"""Augmentations in the Loader: per image in the workers, or batched after ToDevice, with the same draws."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import torch

import stoke
from stoke.errors import ConfigError
from stoke.ops import (
    ColorJitter,
    CutMix,
    Cutout,
    GaussianBlur,
    Map,
    MixUp,
    Normalize,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    ToDevice,
)
from stoke.ops.base import BatchContext

GEOMETRY = [RandomResizedCrop(24), RandomHorizontalFlip()]
KINDS = [
    RandomRotation(30, fill=(0, 128, 255)),
    ColorJitter(0.4, 0.4, 0.4, 0.1),
    RandomGrayscale(p=0.5),
    GaussianBlur(5, sigma=(0.5, 2.0)),
    Cutout(scale=(0.05, 0.2), count=2, fill=(1, 2, 3)),
]


def batches(dataset, ops, seed=0, threads=2, **options):
    loader = stoke.Loader(
        dataset, batch_size=8, seed=seed, transforms={"image": ops}, num_threads=threads, prefetch=2, **options
    )
    with loader:
        return list(loader)


@pytest.mark.parametrize("op", KINDS, ids=lambda op: type(op).__name__)
def test_an_op_after_to_device_runs_batched_with_the_draws_of_the_cpu_path(photos, op):
    per_image = batches(photos, [*GEOMETRY, op])
    batched = batches(photos, [*GEOMETRY, ToDevice("cpu"), op], threads=1, channels_last=True)
    plain = batches(photos, GEOMETRY)
    for cpu, device, before in zip(per_image, batched, plain):
        assert torch.equal(cpu["index"], device["index"])
        assert device["image"].is_contiguous(memory_format=torch.channels_last)
        difference = (cpu["image"].int() - device["image"].int()).abs()
        assert difference.max() <= 1 and (difference > 0).float().mean() <= 0.01  # see test_augment_pixels
        assert not torch.equal(cpu["image"], before["image"])


def test_augmented_batches_depend_on_the_seed_only(photos):
    ops = [*GEOMETRY, ColorJitter(0.5, 0.5, 0.5, 0.2), Cutout(size=6), ToDevice("cpu"), RandomRotation(20)]
    one, again, other = batches(photos, ops, threads=1), batches(photos, ops, threads=3), batches(photos, ops, seed=1)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(one, again))
    assert not all(torch.equal(a["image"], b["image"]) for a, b in zip(one, other))


def test_each_batched_op_keeps_the_random_stream_of_its_cpu_position(photos):
    jitter, blur = ColorJitter(0.5, 0.5, 0.5, 0.2), GaussianBlur(3, sigma=(0.5, 2.0))
    on_cpu = batches(photos, [*GEOMETRY, jitter, blur, Normalize([0.5] * 3, [0.5] * 3)])
    split = batches(photos, [*GEOMETRY, jitter, ToDevice("cpu"), blur, Normalize([0.5] * 3, [0.5] * 3)])
    for a, b in zip(on_cpu, split):
        assert (a["image"] - b["image"]).abs().max() <= 2 / 255 / 0.5 + 1e-6  # one grey level, normalized


def test_mixup_and_cutmix_in_the_loader(photos):
    for transform in (MixUp(0.4, num_classes=3), CutMix(1.0, num_classes=3)):
        loader = stoke.Loader(
            photos, batch_size=8, seed=0, transforms={"image": [RandomResizedCrop(16)]}, batch_transforms=[transform]
        )
        with loader:
            mixed = list(loader)
            again = list(loader)  # the next epoch: new draws
        plain = batches(photos, [RandomResizedCrop(16)])
        for batch, original in zip(mixed, plain):
            assert batch["label"].shape == (len(batch["index"]), 3) and batch["label"].dtype == torch.float32
            assert torch.allclose(batch["label"].sum(1), torch.ones(len(batch["index"])))
            assert torch.equal(batch["index"], original["index"])
            expected = transform.apply(original, BatchContext(0, 0, original["index"].numpy()))
            assert torch.equal(batch["label"], expected["label"]) and torch.equal(batch["image"], expected["image"])
        assert not torch.equal(mixed[0]["image"], plain[0]["image"])
        assert not torch.equal(mixed[0]["image"], again[0]["image"])
        one_thread = batches(photos, [RandomResizedCrop(16)], batch_transforms=[transform], threads=1)
        assert all(torch.equal(a["label"], b["label"]) for a, b in zip(mixed, one_thread))
        assert all(torch.equal(a["image"], b["image"]) for a, b in zip(mixed, one_thread))


def test_misplaced_ops_and_batch_transforms_are_refused(photos):
    with pytest.raises(ConfigError, match=r"puts ColorJitter.* after Normalize.*put it before Normalize"):
        stoke.Loader(photos, 4, transforms={"image": [RandomResizedCrop(8), Normalize([0.5] * 3, [0.5] * 3),
                                                       ColorJitter(0.1)]})  # fmt: skip
    with pytest.raises(ConfigError, match=r"puts Map.* after the batch op ToDevice"):
        stoke.Loader(photos, 4, transforms={"image": [RandomResizedCrop(8), ToDevice("cpu"), Map(abs)]})
    with pytest.raises(ConfigError, match=r"batch_transforms\[0\] MixUp.* needs the batch key 'target'"):
        stoke.Loader(photos, 4, transforms={"image": [RandomResizedCrop(8)]},
                     batch_transforms=[MixUp(1.0, 3, label="target")])  # fmt: skip
    with pytest.raises(ConfigError, match=r"batch_transforms\[0\] is ColorJitter.*not a stoke.ops.BatchTransform"):
        stoke.Loader(photos, 4, transforms={"image": [RandomResizedCrop(8)]}, batch_transforms=[ColorJitter(0.1)])


def test_the_augmentation_page_example_runs(tmp_path, monkeypatch):
    page = Path(__file__).resolve().parents[2] / "docs" / "augmentation.md"
    blocks = re.findall(r"^```python\n(.*?)^```$", page.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert blocks, f"{page} lost its runnable example"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    namespace: dict = {}
    exec(compile(blocks[0], str(page), "exec"), namespace)
    assert namespace["batch"]["label"].shape == (16, 10)
