"""Bootstrap confidence intervals for robustness scores, and pairwise comparisons.

Percentile bootstrap, seeded, with a stated number of resamples. What is resampled depends on
what the study measured, per (optimizer, variant):

- "seeds within cells": every measured cell has two or more seeds. The grid stays fixed; each
  cell's k seeds are drawn with replacement, after their deviations from the cell mean are
  scaled by sqrt(k / (k - 1)) so a resample's variance is unbiased (Davison & Hinkley 1997,
  adjusted residuals). The interval covers seed-to-seed noise of this grid, for every measure
  (the layout measures too).
- "grid cells": one seed per cell. The cells are drawn with replacement (unadjusted: with few
  cells, scaled deviations would leave [0, 100]%). The interval covers which cells a grid like
  this one happens to hold; it exists only for the pooled measures (mean, variance, ...), since
  a resampled set of cells has no lr x wd layout.

Measured coverage of a known truth at a nominal 95% (tests/analysis/test_uncertainty.py, 300
simulated studies each): 91.7% over 25 grid cells, 94.0% over 4 seeds in each of 25 cells.

Each entry draws from its own stream (the seed and a hash of its name), so its interval does not
change when other optimizers are added to the study.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustbench_opt.analysis.scores import (
    ENTRY,
    MEASURES,
    POINT,
    cell_means,
    counted_values,
    entry_grids,
    grid_measures,
    lr_wd_grid,
    point_keys,
    pooled_measures,
)
from robustbench_opt.errors import UserError, unknown

LEVEL = 0.95  # default confidence level
RESAMPLES = 2000  # default number of bootstrap resamples
SEED = 0  # default bootstrap seed
OVER_SEEDS = "seeds within cells"
OVER_CELLS = "grid cells"
OVER_POINT_SEEDS = "seeds within points"  # a sampled or many-axis space
OVER_POINTS = "points of the space"


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap draws of every measure for one (optimizer, variant)."""

    optimizer: str
    variant: str
    over: str  # OVER_SEEDS or OVER_CELLS
    draws: dict[str, np.ndarray]  # measure -> (resamples,) values; absent = no interval


def check_level(level: float) -> None:
    """One-line error for a confidence level outside (0, 1)."""
    if not 0.0 < level < 1.0:
        raise UserError(f"confidence level {level!r} must be in (0, 1), e.g. 0.95; fix the level")


def bootstrap(
    cells: pd.DataFrame,
    metric: str = "final",
    *,
    chance: float,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    default_cell: tuple[float, float] | None = None,
) -> list[Bootstrap]:
    """Bootstrap draws per entry, in the order the study lists the entries."""
    if resamples < 1:
        raise UserError(f"resamples {resamples!r} must be >= 1, e.g. {RESAMPLES}; fix it")
    means = cell_means(cells, metric, chance=chance)
    if not lr_wd_grid(cells):
        return _space_bootstrap(cells, means, metric, chance, resamples, seed)
    seeds = _seed_values(cells, metric, chance)
    out = []
    for entry in entry_grids(means, default_cell):
        measured = ~np.isnan(entry.grid)
        if not measured.any():
            out.append(Bootstrap(entry.optimizer, entry.variant, OVER_CELLS, {}))
            continue
        rng = np.random.default_rng(
            [seed, zlib.crc32(f"{entry.optimizer}\0{entry.variant}".encode())]
        )
        per_cell = [
            seeds.get((entry.optimizer, entry.variant, lr, wd), np.array([]))
            for lr, wd in _measured_keys(entry, measured)
        ]
        if all(len(v) >= 2 for v in per_cell):
            grids = np.full((resamples, *entry.grid.shape), np.nan)
            for (i, j), values in zip(np.argwhere(measured), per_cell, strict=True):
                picks = rng.integers(0, len(values), size=(resamples, len(values)))
                grids[:, i, j] = _adjusted(values)[picks].mean(axis=1)
            draws = pooled_measures(grids[:, measured])
            draws |= grid_measures(grids, chance, entry.default)
            out.append(Bootstrap(entry.optimizer, entry.variant, OVER_SEEDS, draws))
        else:
            values = entry.grid[measured]
            picks = rng.integers(0, len(values), size=(resamples, len(values)))
            draws = pooled_measures(values[picks])
            out.append(Bootstrap(entry.optimizer, entry.variant, OVER_CELLS, draws))
    return out


def _space_bootstrap(
    cells: pd.DataFrame,
    means: pd.DataFrame,
    metric: str,
    chance: float,
    resamples: int,
    seed: int,
) -> list[Bootstrap]:
    """Draws of the layout-free measures over an entry's points: seeds resampled within each
    point when every point has two or more, else the points resampled."""
    counted = cells.assign(value=counted_values(cells, metric, chance), point_key=point_keys(cells))
    seeds = {
        key: group["value"].dropna().to_numpy(float)
        for key, group in counted.groupby(POINT, sort=False)
    }
    out = []
    for (optimizer, variant), points in means.groupby(ENTRY, sort=False):
        measured = points[points["acc"].notna()]
        if measured.empty:
            out.append(Bootstrap(optimizer, variant, OVER_POINTS, {}))
            continue
        rng = np.random.default_rng([seed, zlib.crc32(f"{optimizer}\0{variant}".encode())])
        per_point = [seeds[(optimizer, variant, key)] for key in measured["point_key"]]
        if all(len(v) >= 2 for v in per_point):
            draws = np.stack(
                [
                    _adjusted(v)[rng.integers(0, len(v), size=(resamples, len(v)))].mean(axis=1)
                    for v in per_point
                ],
                axis=1,
            )
            out.append(Bootstrap(optimizer, variant, OVER_POINT_SEEDS, pooled_measures(draws)))
        else:
            values = measured["acc"].to_numpy(float)
            picks = rng.integers(0, len(values), size=(resamples, len(values)))
            out.append(Bootstrap(optimizer, variant, OVER_POINTS, pooled_measures(values[picks])))
    return out


def _adjusted(values: np.ndarray) -> np.ndarray:
    """A cell's seed accuracies with their deviations from the mean scaled by sqrt(k / (k - 1))
    (resamples then have an unbiased variance), kept within [0, 1]."""
    k = len(values)
    return np.clip(values.mean() + np.sqrt(k / (k - 1)) * (values - values.mean()), 0.0, 1.0)


def _measured_keys(entry, measured: np.ndarray) -> list[tuple[float, float]]:
    return [(float(entry.lrs[i]), float(entry.wds[j])) for i, j in np.argwhere(measured)]


def _seed_values(
    cells: pd.DataFrame, metric: str, chance: float
) -> dict[tuple[str, str, float, float], np.ndarray]:
    """Each grid cell's per-seed accuracies under the divergence policy."""
    counted = cells.assign(value=counted_values(cells, metric, chance)).dropna(subset=["value"])
    return {
        (o, v, float(lr), float(wd)): group["value"].to_numpy(float)
        for (o, v, lr, wd), group in counted.groupby([*ENTRY, "lr", "weight_decay"], sort=False)
    }


def intervals(boots: list[Bootstrap], level: float = LEVEL) -> pd.DataFrame:
    """One row per entry: `over`, and `<measure>_lo` / `<measure>_hi` (NaN: no interval)."""
    check_level(level)
    tails = (100 * (1 - level) / 2, 100 * (1 + level) / 2)
    rows = []
    for boot in boots:
        row: dict[str, object] = {"optimizer": boot.optimizer, "variant": boot.variant,
                                  "over": boot.over}  # fmt: skip
        for name, draws in boot.draws.items():
            finite = draws[np.isfinite(draws)]
            lo, hi = np.percentile(finite, tails) if len(finite) else (np.nan, np.nan)
            row[f"{name}_lo"], row[f"{name}_hi"] = float(lo), float(hi)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Difference:
    """Score of `a` minus score of `b`, with its bootstrap interval."""

    measure: str
    a: str
    b: str
    difference: float
    low: float
    high: float
    level: float

    @property
    def separable(self) -> bool:
        """The interval excludes zero."""
        return bool(self.low > 0 or self.high < 0)


def compare_pair(
    scores: pd.DataFrame,
    boots: list[Bootstrap],
    a: str,
    b: str,
    measure: str,
    level: float = LEVEL,
) -> Difference:
    """`a` - `b` on `measure` (entries named by optimizer, or "optimizer / variant")."""
    check_level(level)
    if measure not in MEASURES:
        raise unknown("measure", measure, MEASURES, "pick one of these")
    names = {_name(x.optimizer, x.variant, boots): x for x in boots}
    for name in (a, b):
        if name not in names:
            raise unknown("optimizer", name, names, "name two optimizers of the study")
    if a == b:
        raise UserError(f"compare {a!r} with another optimizer, not with itself")
    draws = [names[n].draws.get(measure) for n in (a, b)]
    if any(d is None for d in draws):
        raise UserError(
            f"{measure} has no interval here (one seed per cell: the bootstrap resamples grid "
            "cells, which keeps no lr x wd layout); pick a pooled measure such as mean or variance"
        )
    point = [float(scores.loc[_name_mask(scores, n, boots), measure].iloc[0]) for n in (a, b)]
    diff = draws[0] - draws[1]
    diff = diff[np.isfinite(diff)]
    low, high = np.percentile(diff, (100 * (1 - level) / 2, 100 * (1 + level) / 2))
    return Difference(measure, a, b, point[0] - point[1], float(low), float(high), level)


def _name(optimizer: str, variant: str, boots: list[Bootstrap]) -> str:
    several = len({x.variant for x in boots}) > 1
    return f"{optimizer} / {variant}" if several else optimizer


def _name_mask(scores: pd.DataFrame, name: str, boots: list[Bootstrap]) -> pd.Series:
    names = [
        _name(o, v, boots) for o, v in zip(scores["optimizer"], scores["variant"], strict=True)
    ]
    return pd.Series(names, index=scores.index) == name
