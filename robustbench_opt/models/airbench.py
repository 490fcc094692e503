"""A small, fast conv net in the spirit of airbench (Jordan 2024, KellerJordan/cifar10-airbench).

airbench94's body: three groups of conv3x3-pool-BN-GELU / conv3x3-BN-GELU with widths 64, 256,
256, a global max-pool and a linear head; about 2 M parameters, 94% on CIFAR-10 in seconds on
one GPU. Kept neutral across optimizers: a plain learnable stem instead of the data-dependent
whitening layer, standard BatchNorm, no output temperature, no lookahead, label smoothing or
test-time augmentation (tricks that were tuned with one optimizer and one learning rate).
"""

from __future__ import annotations

from torch import Tensor, nn

STEM_WIDTH = 24  # channels of the stem conv (airbench's whitening layer width)
WIDTHS = (64, 256, 256)  # output channels of the three conv groups


class ConvGroup(nn.Sequential):
    """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU: halves the image side."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.GELU(),
        )


class AirbenchNet(nn.Module):
    """Stem conv-BN-GELU, three ConvGroups (image side / 8), global max-pool, linear head.

    Valid for image sides >= 8 (8x8 digits end at 1x1, 32x32 CIFAR at 4x4 before the pool).
    """

    def __init__(self, num_classes: int, shape: tuple[int, ...]):
        super().__init__()
        in_channels = shape[0]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STEM_WIDTH, 3, padding=1, bias=False),
            nn.BatchNorm2d(STEM_WIDTH),
            nn.GELU(),
        )
        ins = (STEM_WIDTH, *WIDTHS[:-1])
        self.groups = nn.Sequential(*(ConvGroup(a, b) for a, b in zip(ins, WIDTHS, strict=True)))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(WIDTHS[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.groups(self.stem(x))).flatten(1))
