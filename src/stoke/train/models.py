"""Models defined in the project (torchvision is not importable on every machine stoke runs on).

``SmallCNN`` is the demo's model. ``resnet18`` and ``resnet50`` are the ResNets of He et al. (2015) with
torchvision's layer layout, names and initialisation, so their parameter counts match (11,689,512 and
25,557,032 for 1,000 classes) and a torchvision ``state_dict`` loads into them. ``build_model`` picks one by
the name ``stoke train --model`` takes. Not here: pretrained weights (nothing is downloaded) or other
architectures.

Example:
    >>> import torch
    >>> SmallCNN(in_channels=1, num_classes=10)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    >>> build_model("resnet18", in_channels=3, num_classes=5)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from stoke.errors import ConfigError


def _block(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs), nn.ReLU(inplace=True)
    )


class SmallCNN(nn.Module):
    """Three conv blocks, one pooling step, global average pooling and a linear classifier."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(in_channels, width),
            _block(width, 2 * width),
            nn.MaxPool2d(2),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))


def _shortcut(inputs: int, outputs: int, stride: int) -> nn.Module | None:
    """The 1x1 projection a block needs when it changes the resolution or the width (torchvision's option B)."""
    if stride == 1 and inputs == outputs:
        return None
    return nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut: the block of ResNet-18 and -34."""

    expansion = 1

    def __init__(self, inputs: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inputs, width, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 down, 3x3 (carrying the stride, as torchvision's "ResNet v1.5"), 1x1 up four times: ResNet-50's block."""

    expansion = 4

    def __init__(self, inputs: int, width: int, stride: int = 1) -> None:
        super().__init__()
        outputs = width * self.expansion
        self.conv1 = nn.Conv2d(inputs, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, outputs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(outputs)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inputs, outputs, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A 7x7 stem, four stages of ``block`` (64, 128, 256, 512 wide; the last three halve the resolution),
    global average pooling and a linear classifier; the attribute names are torchvision's."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        in_channels: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inputs = 64
        stages = []
        for stage, blocks in enumerate(layers):
            width, stride = 64 * 2**stage, 1 if stage == 0 else 2
            stage_blocks = []
            for position in range(blocks):
                stage_blocks.append(block(inputs, width, stride if position == 0 else 1))
                inputs = width * block.expansion
            stages.append(nn.Sequential(*stage_blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inputs, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18(in_channels: int = 3, num_classes: int = 1000) -> ResNet:
    """ResNet-18: BasicBlocks, (2, 2, 2, 2) per stage."""
    return ResNet(BasicBlock, (2, 2, 2, 2), in_channels, num_classes)


def resnet50(in_channels: int = 3, num_classes: int = 1000) -> ResNet:
    """ResNet-50: Bottlenecks, (3, 4, 6, 3) per stage."""
    return ResNet(Bottleneck, (3, 4, 6, 3), in_channels, num_classes)


MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "small-cnn": lambda in_channels, num_classes: SmallCNN(in_channels, num_classes),
    "resnet18": resnet18,
    "resnet50": resnet50,
}


def build_model(name: str, in_channels: int = 3, num_classes: int = 1000) -> nn.Module:
    """The model ``stoke train --model NAME`` trains: ``small-cnn``, ``resnet18`` or ``resnet50``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    if in_channels < 1 or num_classes < 1:
        raise ConfigError(
            f"a model needs at least one input channel and one class, got {in_channels} and {num_classes}"
        )
    return MODELS[name](in_channels, num_classes)
