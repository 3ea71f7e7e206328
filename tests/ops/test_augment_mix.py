"""MixUp and CutMix: images and labels mixed by the same lambda, partners deterministic, any dtype/format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stoke.errors import ConfigError
from stoke.ops import CutMix, MixUp
from stoke.ops.base import BatchContext


def constant_batch(count, classes=5, height=12, width=16, dtype=torch.uint8):
    """Sample i is the constant image 10*(i+1) with label i % classes: pixels say where they came from."""
    values = torch.arange(1, count + 1, dtype=torch.float32).mul(10).view(count, 1, 1, 1)
    images = values.expand(count, 3, height, width).to(dtype)
    return {"image": images.contiguous(), "label": torch.arange(count) % classes, "index": torch.arange(count)}


def context(count, seed=0, epoch=0, offset=0):
    return BatchContext(seed, epoch, np.arange(offset, offset + count))


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 40), seed=st.integers(0, 10**6))
def test_partners_form_one_cycle_with_no_sample_its_own_partner(count, seed):
    op = MixUp(alpha=1.0, num_classes=3)
    partner = op.partners(op.uniforms(context(count, seed)))
    assert sorted(partner.tolist()) == list(range(count))  # a permutation: each sample a partner once
    if count > 1:
        assert (partner != np.arange(count)).all()


def test_mixup_mixes_images_and_labels_by_the_same_lambda():
    op = MixUp(alpha=0.4, num_classes=5)
    batch = constant_batch(6, dtype=torch.float32)
    out = op.apply(batch, context(6, seed=3))
    uniforms = op.uniforms(context(6, seed=3))
    partner, lam = op.partners(uniforms), op.lambdas(uniforms)
    own = torch.nn.functional.one_hot(batch["label"], 5).float()
    expected_targets = own * torch.tensor(lam, dtype=torch.float32)[:, None]
    expected_targets += own[partner] * torch.tensor(1 - lam, dtype=torch.float32)[:, None]
    assert out["label"].dtype == torch.float32 and out["label"].shape == (6, 5)
    assert torch.allclose(out["label"], expected_targets, atol=1e-6)
    assert torch.allclose(out["label"].sum(1), torch.ones(6))
    values = 10.0 * (np.arange(6) + 1)
    expected_pixels = lam * values + (1 - lam) * values[partner]
    assert np.allclose(out["image"][:, :, 0, 0].numpy(), expected_pixels[:, None], atol=1e-4)
    assert torch.equal(out["index"], batch["index"])  # other keys pass through
    assert torch.equal(batch["image"], constant_batch(6, dtype=torch.float32)["image"])  # input untouched


def test_cutmix_pastes_a_box_and_labels_follow_the_pasted_area():
    op = CutMix(alpha=1.0, num_classes=8)
    count, height, width = 8, 12, 16
    batch = constant_batch(count, classes=8, height=height, width=width)
    out = op.apply(batch, context(count, seed=11))
    uniforms = op.uniforms(context(count, seed=11))
    partner = op.partners(uniforms)
    boxes, lam = op.boxes(uniforms, height, width)
    for row in range(count):
        pasted = out["image"][row, 0] == 10 * (partner[row] + 1)
        top, left, bottom, right = boxes[row]
        box = torch.zeros(height, width, dtype=torch.bool)
        box[top:bottom, left:right] = True
        assert torch.equal(pasted, box)  # exactly the box comes from the partner, the rest is its own
        share_pasted = pasted.float().mean().item()
        assert out["label"][row, row] == pytest.approx(1 - share_pasted, abs=1e-6)
        assert out["label"][row, partner[row]] == pytest.approx(share_pasted, abs=1e-6)
        assert lam[row] == pytest.approx(1 - share_pasted)
    assert torch.allclose(out["label"].sum(1), torch.ones(count))


@pytest.mark.parametrize("op", [MixUp(0.2, 4), CutMix(1.0, 4)], ids=repr)
def test_each_samples_draws_depend_only_on_seed_epoch_and_its_index(op):
    whole = op.uniforms(context(10, seed=1, epoch=2))
    part = op.uniforms(BatchContext(1, 2, np.array([7, 3])))
    assert np.array_equal(part, whole[[7, 3]])
    assert not np.array_equal(op.uniforms(context(10, seed=1, epoch=3)), whole)
    assert not np.array_equal(op.uniforms(context(10, seed=2, epoch=2)), whole)
    batch = constant_batch(10, classes=4)
    first, again = op.apply(batch, context(10, 1, 2)), op.apply(batch, context(10, 1, 2))
    assert all(torch.equal(first[key], again[key]) for key in ("image", "label"))


def test_lambda_follows_the_beta_distribution():
    op = MixUp(alpha=0.4, num_classes=2)
    lam = op.lambdas(op.uniforms(context(20000)))
    assert ((lam >= 0) & (lam <= 1)).all()
    assert lam.mean() == pytest.approx(0.5, abs=0.01)
    assert lam.var() == pytest.approx(1 / (4 * (2 * 0.4 + 1)), abs=0.01)  # Beta(a, a) variance


@pytest.mark.parametrize("op", [MixUp(0.4, 5), CutMix(1.0, 5)], ids=repr)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32])
def test_dtype_and_channels_last_are_kept(op, dtype):
    batch = constant_batch(4, dtype=dtype)
    batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    out = op.apply(batch, context(4))
    assert out["image"].dtype == dtype and out["image"].shape == batch["image"].shape
    assert out["image"].is_contiguous(memory_format=torch.channels_last)
    floats = op.apply(constant_batch(4, dtype=torch.float32), context(4))["image"]
    assert (out["image"].float() - floats).abs().max() <= (0.5 if dtype == torch.uint8 else 0.1)


def test_a_single_sample_batch_is_left_alone_with_a_one_hot_label():
    batch = constant_batch(1)
    for op in (MixUp(1.0, 5), CutMix(1.0, 5)):
        out = op.apply(batch, context(1))
        assert torch.equal(out["image"], batch["image"])
        assert out["label"].tolist() == [[1.0, 0.0, 0.0, 0.0, 0.0]]


def test_soft_targets_from_an_earlier_mix_are_mixed_again():
    batch = constant_batch(6, classes=3)
    once = MixUp(1.0, 3).apply(batch, context(6))
    twice = CutMix(1.0, 3).apply(once, context(6))
    assert twice["label"].shape == (6, 3) and torch.allclose(twice["label"].sum(1), torch.ones(6))


def test_bad_labels_and_settings_are_refused_with_a_sentence():
    batch = constant_batch(4, classes=10)
    with pytest.raises(ValueError, match=r"got the label 3 under 'label', outside 0\.\.2; set num_classes"):
        MixUp(1.0, 3).apply(batch, context(4))
    with pytest.raises(ValueError, match=r"int labels \[B\] or float targets \[B, 10\]"):
        MixUp(1.0, 10).apply({**batch, "label": torch.zeros(4, 2)}, context(4))
    with pytest.raises(ConfigError, match=r"needs the batch key 'target'.*name its keys with image= and label="):
        CutMix(1.0, 10, label="target").apply(batch, context(4))
    with pytest.raises(ValueError, match=r"alpha must be a positive number"):
        MixUp(0, 3)
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer"):
        CutMix(1.0, 0)
