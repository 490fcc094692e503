"""Search spaces: axes on a scale, and designs that turn them into points.

An axis is one hyperparameter (an optimizer keyword such as `beta1`, or a recipe field such as
`batch_size`) with a scale:

- `list`: the values given (a grid takes them all; a sampled design draws among them);
- `linear`, `log`, `one_minus_log`: a range [lo, hi] in the axis's own units, uniform in x, in
  log x, or in log(1 - x) (betas and momentum near 1, as AlgoPerf's `one_minus_beta1`:
  AlgoPerf's one_minus_beta1 in [0.01, 0.1] is beta1 in [0.9, 0.99] here); a grid takes `num`
  points, ends included;
- `choices`: categories or integers, drawn with equal probability.

A design turns an optimizer entry's axes (d of them, in order) into points:

- `grid`: the full product (the lr x weight-decay default);
- `sobol`: scrambled Sobol points from `scipy.stats.qmc.Sobol(d, scramble=True, seed=seed)`;
  `points` must be a power of two, because a Sobol set is balanced only then (every 1-D
  projection of 2^m points puts one point in each of 2^m equal strata);
- `random`: `numpy.random.default_rng(seed).random((points, d))`, uniform on each scale.

Both sampled designs are prefix-stable: the first n points of a longer sequence are the n
points of a shorter one, so growing `points` adds points and keeps the old ones. Every optimizer
entry with d axes gets the same unit points (paired comparisons). Values are rounded to 12
significant digits, so the same design gives the same values on every machine.

Pure numpy/scipy: no torch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import qmc

Scale = Literal["list", "linear", "log", "one_minus_log", "choices"]
RANGE_SCALES: dict[str, Scale] = {
    "range": "linear",
    "log_range": "log",
    "one_minus_log_range": "one_minus_log",
}
DESIGNS: tuple[str, ...] = ("grid", "sobol", "random")
MAX_GRID_POINTS = 4096  # points one optimizer entry's grid may have (x variants x seeds)


@dataclass(frozen=True)
class Axis:
    """One axis of a space: `values` for list/choices scales, `low`/`high` (and `num` for a
    grid) for ranges; `integer` axes round their values."""

    name: str
    scale: Scale
    values: tuple[Any, ...] = ()
    low: float = math.nan
    high: float = math.nan
    num: int | None = None
    integer: bool = False

    @property
    def numeric(self) -> bool:
        """Whether the axis has an order and distances (ranges, lists of numbers)."""
        if self.scale in ("linear", "log", "one_minus_log"):
            return True
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)

    def grid_values(self) -> tuple[Any, ...]:
        """The values a grid takes on this axis."""
        if self.scale in ("list", "choices"):
            return self.values
        assert self.num is not None, "spec validation guarantees num for grid ranges"
        units = [i / (self.num - 1) for i in range(self.num)]
        return tuple(dict.fromkeys(self.at(u) for u in units))  # integers may repeat

    def at(self, u: float) -> Any:
        """The axis value at unit coordinate u in [0, 1] on its scale."""
        if self.scale in ("list", "choices"):
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        lo, hi = self.low, self.high
        if self.scale == "linear":
            value = lo + u * (hi - lo)
        elif self.scale == "log":
            value = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        else:  # one_minus_log: 1 - x log-uniform between 1 - lo and 1 - hi
            a, b = math.log1p(-lo), math.log1p(-hi)
            value = -math.expm1(a + u * (b - a))
        if self.integer:
            return int(round(value))
        return _round(value)

    def unit(self, value: Any) -> float:
        """The unit coordinate of `value` on the axis's scale (`at`'s inverse; for lists and
        choices the centre of the value's stratum)."""
        if self.scale in ("list", "choices"):
            return (self.values.index(value) + 0.5) / len(self.values)
        lo, hi, x = self.low, self.high, float(value)
        if self.scale == "linear":
            return (x - lo) / (hi - lo)
        if self.scale == "log":
            return (math.log(x) - math.log(lo)) / (math.log(hi) - math.log(lo))
        a, b = math.log1p(-lo), math.log1p(-hi)
        return (math.log1p(-x) - a) / (b - a)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe form (a study's stored spec carries its axes)."""
        out: dict[str, Any] = {"name": self.name, "scale": self.scale}
        if self.scale in ("list", "choices"):
            out["values"] = list(self.values)
        else:
            out.update(low=self.low, high=self.high, num=self.num)
        if self.integer:
            out["integer"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Axis:
        return cls(
            name=data["name"],
            scale=data["scale"],
            values=tuple(data.get("values", ())),
            low=data.get("low", math.nan),
            high=data.get("high", math.nan),
            num=data.get("num"),
            integer=data.get("integer", False),
        )

    def describe(self) -> str:
        """`log [0.0001, 0.1]`, `one_minus_log [0.9, 0.999]`, `list [32, 64]`."""
        if self.scale in ("list", "choices"):
            return f"{self.scale} {list(self.values)}"
        return f"{self.scale} [{self.low:g}, {self.high:g}]"


@dataclass(frozen=True)
class Point:
    """One point of a design: its index in the design's sequence (grid: in the product's
    order) and the value on each axis."""

    index: int
    values: dict[str, Any]


def merge_axes(shared: Sequence[Axis], own: Sequence[Axis]) -> tuple[Axis, ...]:
    """An optimizer entry's axes, in order: the study's, each replaced by the entry's axis of the
    same name, then the entry's other axes."""
    mine = {axis.name: axis for axis in own}
    return tuple(mine.pop(axis.name, axis) for axis in shared) + tuple(mine.values())


def design_points(
    axes: Sequence[Axis], design: str, points: int | None = None, seed: int = 0
) -> list[Point]:
    """The points of `design` over `axes` (module docstring); `points` for sampled designs."""
    if design == "grid":
        grid = itertools.product(*(axis.grid_values() for axis in axes))
        return [
            Point(i, {a.name: v for a, v in zip(axes, combo, strict=True)})
            for i, combo in enumerate(grid)
        ]
    assert points is not None and points >= 1, "spec validation guarantees points"
    return [
        Point(i, {axis.name: axis.at(float(u)) for axis, u in zip(axes, row, strict=True)})
        for i, row in enumerate(unit_points(len(axes), design, points, seed))
    ]


def unit_points(d: int, design: str, points: int, seed: int) -> np.ndarray:
    """[points, d] unit coordinates of a sampled design."""
    if d == 0:
        return np.zeros((points, 0))
    if design == "sobol":
        return qmc.Sobol(d, scramble=True, seed=seed).random(points)
    return np.random.default_rng(seed).random((points, d))


def grid_size(axes: Sequence[Axis]) -> int:
    """How many points the full product of `axes` has."""
    return math.prod(len(axis.grid_values()) for axis in axes)


def is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _round(value: float) -> float:
    """12 significant digits: the same value on every machine (and readable)."""
    return float(f"{value:.12g}")
