"""CIFAR ResNets of He et al. 2016 (arXiv 1512.03385, sec. 4.2) with option A shortcuts.

6n+2 layers: a 3x3 conv with 16 filters, three stages of n basic blocks with 16, 32, 64
filters (the first block of stages 2 and 3 halves the feature map), global average pooling and
a linear classifier. Option A: the shortcut is parameter-free, subsampling by 2 and padding the
new channels with zeros. ResNet-20 (n=3) has 0.27M parameters, ResNet-56 (n=9) 0.85M.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class _ZeroPadShortcut(nn.Module):
    """Option A: stride-2 subsampling plus zero channels (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        half = self.extra // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra - half))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = _ZeroPadShortcut(planes - in_planes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images; `blocks_per_stage` is n."""

    def __init__(self, blocks_per_stage: int, num_classes: int, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for block in range(blocks_per_stage):
                layers.append(_BasicBlock(in_planes, planes, stride if block == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)  # He et al. 2015 init, as the paper

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def resnet20(num_classes: int, shape: tuple[int, ...]) -> CifarResNet:
    """ResNet-20 (n=3, 0.27M parameters for 10 classes)."""
    return CifarResNet(3, num_classes, shape[0])


def resnet56(num_classes: int, shape: tuple[int, ...]) -> CifarResNet:
    """ResNet-56 (n=9, 0.85M parameters for 10 classes)."""
    return CifarResNet(9, num_classes, shape[0])
