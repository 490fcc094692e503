"""The seed blog's plain CNN: two conv + max-pool layers, then a small classifier."""

from __future__ import annotations

from torch import Tensor, nn


class SimpleCNN(nn.Module):
    """conv3x3-ReLU-maxpool2 twice (32 then 64 channels), then Linear-ReLU-Linear.

    The blog (seed 000) names the layer types but no widths; these widths are ours. "Same"
    padding keeps it valid on 8x8 digits (8 -> 4 -> 2) as well as on 32x32 CIFAR (32 -> 8).
    """

    SEQUENTIAL_CHILDREN = True  # forward applies its children in order (packs fuse it)

    def __init__(self, num_classes: int, in_channels: int, image_size: int, hidden: int = 128):
        super().__init__()
        side = image_size // 4  # two 2x2 max-pools
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
