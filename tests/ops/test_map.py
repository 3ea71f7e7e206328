"""``stoke.ops.Map``: the user's function on each image, after the geometry, reproducible per seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import stoke
from stoke.errors import ConfigError
from stoke.ops import Map, Normalize, RandomHorizontalFlip, RandomResizedCrop


def first_batch(dataset, ops, seed=0, threads=2):
    loader = stoke.Loader(dataset, batch_size=8, seed=seed, transforms={"image": ops}, num_threads=threads)
    batch = next(iter(loader))
    loader.close()
    return batch


def test_map_sees_the_rendered_image_and_may_return_a_new_one(photos):
    geometry = [RandomResizedCrop(20), RandomHorizontalFlip()]
    plain = first_batch(photos, geometry)
    shapes = []

    def invert(image):
        shapes.append((image.shape, image.dtype))
        return 255 - image

    inverted = first_batch(photos, [*geometry, Map(invert)])
    assert torch.equal(inverted["image"], 255 - plain["image"])
    assert set(shapes) == {((20, 20, 3), np.dtype(np.uint8))}  # HWC, whatever the batch layout


def test_map_may_change_the_image_in_place(photos):
    def darken(image):
        image //= 2

    plain = first_batch(photos, [RandomResizedCrop(12)])
    darker = first_batch(photos, [RandomResizedCrop(12), Map(darken)])
    assert torch.equal(darker["image"], plain["image"] // 2)


def test_random_maps_are_reproducible_and_keyed_by_seed(photos):
    def noise(image, rng):
        image[:] = rng.integers(0, 256, image.shape, dtype=np.uint8)

    ops = [RandomResizedCrop(8), Map(noise, random=True)]
    one, again = first_batch(photos, ops, threads=1), first_batch(photos, ops, threads=3)
    other_seed = first_batch(photos, ops, seed=1)
    assert torch.equal(one["image"], again["image"])
    assert not torch.equal(one["image"][0], one["image"][1])  # each sample its own generator
    assert not torch.equal(one["image"], other_seed["image"])


def test_op_order_and_fields_are_checked(photos):
    with pytest.raises(ConfigError, match=r"puts the geometric op RandomHorizontalFlip.* after Map"):
        stoke.Loader(photos, 4, transforms={"image": [RandomResizedCrop(8), Map(np.flipud), RandomHorizontalFlip()]})
    with pytest.raises(ConfigError, match=r"puts Map.* after the batch op Normalize"):
        stoke.Loader(photos, 4, transforms={"image": [RandomResizedCrop(8), Normalize([0.5] * 3, [0.5] * 3), Map(abs)]})
    with pytest.raises(ConfigError, match=r"transforms\['label'\] may only hold batch ops"):
        stoke.Loader(photos, 4, transforms={"image": [RandomResizedCrop(8)], "label": [Map(abs)]})
    with pytest.raises(ConfigError, match=r"Map needs a function"):
        Map("not callable")
