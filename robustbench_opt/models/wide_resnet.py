"""Wide ResNet (Zagoruyko & Komodakis 2016, arXiv 1605.07146), as used by the SAM paper.

WRN-d-k: pre-activation basic blocks (BN-ReLU-conv3x3, twice), (d-4)/6 blocks in each of three
stages with 16k, 32k, 64k filters, 1x1 conv shortcuts where the shape changes, no dropout.
WRN-28-10 has 36.5M parameters for 10 classes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class _PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    """WRN-`depth`-`width` for small images."""

    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_planes = 16
        for planes, stride in ((16 * width, 1), (32 * width, 2), (64 * width, 2)):
            for block in range(blocks):
                layers.append(_PreActBlock(in_planes, planes, stride if block == 0 else 1))
                in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.layers(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


def wrn28_10(num_classes: int, shape: tuple[int, ...]) -> WideResNet:
    """WRN-28-10 (36.5M parameters for 10 classes)."""
    return WideResNet(28, 10, num_classes, shape[0])
