"""A small 1-D CNN, as MNIST-1D's ConvBase (Greydanus 2020, notebooks/models.py).

Three Conv1d-ReLU layers with 25 channels (kernel 5 stride 2, then kernel 3 stride 2 twice, all
padding 1) and a linear classifier on the flattened features: 40 samples -> 19 -> 10 -> 5, so
25 x 5 = 125 features and 5,210 parameters for 10 classes. The classifier is sized from the
sequence length, so other lengths work too.
"""

from __future__ import annotations

from torch import Tensor, nn

CHANNELS = 25  # the reference's width


def _out(length: int, kernel: int) -> int:
    """Conv1d output length at stride 2, padding 1."""
    return (length + 2 - kernel) // 2 + 1


class CNN1D(nn.Module):
    """conv5/2 - conv3/2 - conv3/2 (ReLU each), flatten, linear."""

    def __init__(self, num_classes: int, shape: tuple[int, ...], channels: int = CHANNELS):
        super().__init__()
        in_channels, length = shape
        self.features = nn.Sequential(
            nn.Conv1d(in_channels, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(channels * _out(_out(_out(length, 5), 3), 3), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))
