"""torchvision ResNet-18/34/50 with the usual CIFAR stem.

The ImageNet stem (7x7 stride-2 conv, 3x3 stride-2 max-pool) shrinks a 32x32 image to 8x8
before the first stage; for CIFAR it is replaced by a 3x3 stride-1 conv and no max-pool
(as in kuangliu/pytorch-cifar and the paper's ResNet-34). Everything else is torchvision's,
imported when one is built (importing torchvision takes about a second, which the other
models do not pay).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn


def _cifar_stem(net: nn.Module, in_channels: int) -> nn.Module:
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    net.maxpool = nn.Identity()
    return net


def _builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int, shape: tuple[int, ...]) -> nn.Module:
        import torchvision.models

        factory = getattr(torchvision.models, name)
        return _cifar_stem(factory(weights=None, num_classes=num_classes), shape[0])

    build.__doc__ = f"torchvision {name} with a CIFAR stem, randomly initialised."
    return build


resnet18 = _builder("resnet18")
resnet34 = _builder("resnet34")
resnet50 = _builder("resnet50")
