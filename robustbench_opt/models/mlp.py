"""A small MLP for any input shape, as MNIST-1D's MLPBase (Greydanus 2020, notebooks/models.py).

Flatten -> Linear(d, 100) -> ReLU -> h + ReLU(Linear(100, 100) h) -> Linear(100, classes):
15,210 parameters on MNIST-1D's 40 samples, 89,610 on 28x28 images (10 classes).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

HIDDEN = 100  # units of both hidden layers, the reference's


class MLP(nn.Module):
    """Two hidden layers of `hidden` ReLU units, the second with a residual connection."""

    def __init__(self, num_classes: int, shape: tuple[int, ...], hidden: int = HIDDEN):
        super().__init__()
        self.linear1 = nn.Linear(math.prod(shape), hidden)
        self.linear2 = nn.Linear(hidden, hidden)
        self.linear3 = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x.flatten(1)).relu()
        return self.linear3(h + self.linear2(h).relu())
