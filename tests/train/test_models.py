"""The project's models: ResNets with torchvision's layout and parameter counts, and build_model by name."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stoke.errors import ConfigError
from stoke.train.models import MODELS, Bottleneck, build_model, resnet18, resnet50


def count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_parameter_counts_match_torchvision():
    assert count(resnet18()) == 11_689_512
    assert count(resnet50()) == 25_557_032


def test_layer_names_and_shapes_follow_torchvision():
    shapes = {name: tuple(tensor.shape) for name, tensor in resnet18().state_dict().items()}
    assert shapes["conv1.weight"] == (64, 3, 7, 7)
    assert shapes["layer1.1.conv2.weight"] == (64, 64, 3, 3)
    assert shapes["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert shapes["layer4.1.bn2.running_var"] == (512,)
    assert shapes["fc.weight"] == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in shapes  # the first stage keeps width and resolution
    big = resnet50()
    shapes = {name: tuple(tensor.shape) for name, tensor in big.state_dict().items()}
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert shapes["layer4.2.conv3.weight"] == (2048, 512, 1, 1)
    assert shapes["fc.weight"] == (1000, 2048)
    assert [len(stage) for stage in (big.layer1, big.layer2, big.layer3, big.layer4)] == [3, 4, 6, 3]
    first = big.layer2[0]
    assert isinstance(first, Bottleneck) and first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)  # v1.5


@settings(max_examples=8, deadline=None)
@given(in_channels=st.integers(1, 4), num_classes=st.integers(1, 30))
def test_resnet18_parameters_grow_only_in_stem_and_classifier(in_channels, num_classes):
    # The stem has 64 7x7 filters per input channel; the classifier 512 weights and a bias per class.
    grown = count(resnet18(in_channels, num_classes)) - count(resnet18(1, 1))
    assert grown == 64 * 49 * (in_channels - 1) + 513 * (num_classes - 1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_on_small_grayscale_images(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=7)
    images, labels = torch.randn(4, 1, 16, 16), torch.tensor([0, 1, 2, 6])
    logits = model(images)
    assert logits.shape == (4, 7)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_build_model_refuses_unknown_names_in_one_sentence():
    with pytest.raises(ConfigError, match=r"unknown model 'vgg16'; choose one of small-cnn, resnet18, resnet50"):
        build_model("vgg16")
    with pytest.raises(ConfigError, match="at least one input channel"):
        build_model("resnet18", in_channels=0)
