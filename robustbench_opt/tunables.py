"""Tunable optimizer hyperparameters: what one is, and the ranges the update rules fix.

Torch-free, so the command line can make a flag per known hyperparameter without importing the
optimizer registry; `optim.hyperparams` says which entry has which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True)
class Hyperparameter:
    """One tunable value: where it goes (`keyword`, and `index` into a tuple keyword) and what
    it may be (low..high with open or closed ends; integers when `integer`)."""

    name: str  # the axis name: lr, weight_decay, beta1, momentum, rho, ...
    default: float | None  # None: no default (lr is always given)
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    keyword: str = ""  # the optimizer keyword it sets ("" for lr and weight decay)
    index: int | None = None  # position inside a tuple keyword (betas)

    def range_text(self) -> str:
        """`[0, 1)`, `(0, inf)`; integers say so."""
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        text = f"{left}{self.low:g}, {self.high:g}{right}"
        return f"an integer in {text}" if self.integer else text

    def admits(self, value: float) -> bool:
        """Whether `value` lies in the valid range (and is an integer where it must be)."""
        if self.integer and float(value) != int(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


LR = Hyperparameter("lr", None, 0.0, INF, low_open=True, high_open=True)
WEIGHT_DECAY = Hyperparameter("weight_decay", 0.0, 0.0, INF, high_open=True)
# Keywords whose range is known from the update rule, whatever the entry.
KNOWN: Mapping[str, tuple[float, float, bool, bool]] = {
    "momentum": (0.0, 1.0, False, True),
    "beta1": (0.0, 1.0, False, True),
    "beta2": (0.0, 1.0, False, True),
    "eps": (0.0, INF, True, True),
    "rho": (0.0, INF, True, True),
}
