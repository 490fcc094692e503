"""torchvision ResNet-18/34/50 with the usual CIFAR stem.

The ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool) shrinks a 32x32 image to 8x8
before the first stage; for CIFAR it is replaced by a 3x3 stride-1 conv and no max-pool
(as in kuangliu/pytorch-cifar and the paper's ResNet-34). Everything else is torchvision's.
"""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn


def _cifar_stem(net: torchvision.models.ResNet, in_channels: int) -> torchvision.models.ResNet:
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    net.maxpool = nn.Identity()
    return net


def _builder(factory: Callable[..., torchvision.models.ResNet]) -> Callable[..., nn.Module]:
    def build(num_classes: int, shape: tuple[int, ...]) -> nn.Module:
        return _cifar_stem(factory(weights=None, num_classes=num_classes), shape[0])

    build.__doc__ = f"torchvision {factory.__name__} with a CIFAR stem, randomly initialised."
    return build


resnet18 = _builder(torchvision.models.resnet18)
resnet34 = _builder(torchvision.models.resnet34)
resnet50 = _builder(torchvision.models.resnet50)
