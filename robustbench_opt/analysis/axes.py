"""What each axis of a search space costs in robustness, per optimizer entry.

Inputs are one entry's points: a frame with one row per point of its space (seeds already
averaged, diverged points counted as the scores count them), a column per axis and `acc`
(a fraction). Axes are `space.Axis` objects (their scale says how to bin a continuous axis).

- sensitivity: for each value of the axis (grid) or each of `BINS` equal strata of its scale
  (sampled designs; lists and choices: each value), the best accuracy over the other axes; the
  sensitivity is the mean, over the non-best values, of (best value's accuracy - that value's):
  the accuracy lost, on average, to a non-best value of the axis with the others at their best.
- importance: the share of the accuracy's variance the axis explains. On a complete grid, the
  exact functional-ANOVA main effect: SS between the axis's values / total SS (balanced, so
  the main effects and interactions add up to 1). On a sampled design, Optuna's fANOVA
  evaluator with its settings named (`SAMPLED_IMPORTANCE`), normalised to sum to 1.
- edge: the best point lies at the edge of a numeric axis's range (the lowest or highest grid
  value, or the outer stratum of a sampled axis): the range may not hold the optimum; widen it
  (the Tuning Playbook's advice).
- E[best of k]: the expected best accuracy of k points drawn from the space without replacement
  (`scores.expected_best`), k = 1..n, with a seeded percentile bootstrap band over the points.

Pure pandas/numpy (Optuna for the sampled importance): no torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustbench_opt.analysis.scores import expected_best
from robustbench_opt.space import Axis

BINS = 4  # strata per continuous axis of a sampled design
FANOVA_TREES, FANOVA_DEPTH, FANOVA_SEED = 64, 64, 0
SAMPLED_IMPORTANCE = (
    f"fANOVA (optuna.importance.FanovaImportanceEvaluator, {FANOVA_TREES} trees, depth "
    f"{FANOVA_DEPTH}, seed {FANOVA_SEED}), normalised to sum to 1"
)
GRID_IMPORTANCE = "exact functional-ANOVA main effects on the complete grid (SS share)"


@dataclass(frozen=True)
class AxisFigures:
    """One axis of one entry: what it costs."""

    axis: str
    sensitivity: float  # accuracy (fraction) lost on average to a non-best value
    importance: float  # share of variance in [0, 1]
    best_value: object  # the axis's value at the entry's best point
    at_edge: str | None  # "low" / "high" when the best point is at that end of the range


def strata(points: pd.DataFrame, axis: Axis, grid: bool) -> pd.Series:
    """The stratum of each point on `axis`: its value (grids, lists, choices), else one of
    `BINS` equal strata of the axis's scale."""
    if grid or axis.scale in ("list", "choices"):
        return points[axis.name]
    units = points[axis.name].map(axis.unit).clip(0.0, 1.0)
    return np.minimum((units * BINS).astype(int), BINS - 1)


def sensitivity(points: pd.DataFrame, axis: Axis, grid: bool) -> float:
    """Mean over the non-best strata of (best stratum's best accuracy - stratum's best)."""
    profile = points.groupby(strata(points, axis, grid), sort=True)["acc"].max()
    if len(profile) < 2:
        return 0.0
    losses = profile.max() - profile
    return float(losses.drop(losses.idxmin()).mean())


def grid_importance(points: pd.DataFrame, axes: Sequence[Axis]) -> dict[str, float]:
    """Main-effect variance shares on a complete grid: SS between an axis's values / SS."""
    y = points["acc"].to_numpy(dtype=float)
    total = float(((y - y.mean()) ** 2).sum())
    out = {}
    for axis in axes:
        means = points.groupby(axis.name)["acc"].agg(["mean", "size"])
        between = float((means["size"] * (means["mean"] - y.mean()) ** 2).sum())
        out[axis.name] = between / total if total > 0 else 0.0
    return out


def sampled_importance(points: pd.DataFrame, axes: Sequence[Axis]) -> dict[str, float]:
    """Optuna's fANOVA importances of the axes (`SAMPLED_IMPORTANCE`)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    distributions = {}
    for axis in axes:
        if axis.numeric:
            values = points[axis.name].astype(float)
            low, high = float(values.min()), float(values.max())
            log = axis.scale == "log" and low > 0
            distributions[axis.name] = FloatDistribution(low, max(high, low + 1e-300), log=log)
        else:
            distributions[axis.name] = CategoricalDistribution(list(axis.values))
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    study = optuna.create_study(direction="maximize")
    for row in points.itertuples(index=False):
        record = row._asdict()
        params = {a.name: _param(record[a.name], a) for a in axes}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions=distributions, value=float(record["acc"])
            )
        )
    evaluator = optuna.importance.FanovaImportanceEvaluator(
        n_trees=FANOVA_TREES, max_depth=FANOVA_DEPTH, seed=FANOVA_SEED
    )
    shares = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
    return {axis.name: float(shares.get(axis.name, 0.0)) for axis in axes}


def _param(value: object, axis: Axis) -> object:
    return float(value) if axis.numeric else value  # type: ignore[arg-type]


def edge(points: pd.DataFrame, axis: Axis, grid: bool) -> str | None:
    """ "low"/"high" when the best point sits at that end of a numeric axis's range."""
    if not axis.numeric or len(points) < 2:
        return None
    best = points.loc[points["acc"].idxmax(), axis.name]
    if grid or axis.scale == "list":
        values = sorted(points[axis.name].unique())
        if len(values) < 3:
            return None  # two values: every point is at an edge; nothing to say
        return "low" if best == values[0] else "high" if best == values[-1] else None
    stratum = min(int(axis.unit(best) * BINS), BINS - 1)
    return "low" if stratum == 0 else "high" if stratum == BINS - 1 else None


def axis_figures(points: pd.DataFrame, axes: Sequence[Axis], grid: bool) -> list[AxisFigures]:
    """Every axis's sensitivity, importance and edge for one entry's measured points."""
    measured = points[points["acc"].notna()]
    if len(measured) < 2:
        return []
    importance = grid_importance(measured, axes) if grid else sampled_importance(measured, axes)
    best = measured.loc[measured["acc"].idxmax()]
    return [
        AxisFigures(
            axis.name,
            sensitivity(measured, axis, grid),
            importance[axis.name],
            best[axis.name],
            edge(measured, axis, grid),
        )
        for axis in axes
    ]


def edge_warning(entry: str, figures: AxisFigures, axis: Axis) -> str:
    """The sentence under the table for a best point at the edge of its range."""
    side = "bottom" if figures.at_edge == "low" else "top"
    return (
        f"{entry}: its best point has {axis.name} = {figures.best_value:g}, at the {side} of "
        f"the range ({axis.describe()}); the optimum may lie outside it: widen the "
        f"{axis.name} range"
    )


def expected_best_band(
    acc: np.ndarray, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """k, expected_best, low, high for k = 1..n: E[best of k points] and its percentile
    bootstrap band (the n points resampled with replacement, seeded)."""
    values = np.asarray(acc, dtype=float)
    curve = expected_best(values)
    rng = np.random.default_rng(seed)
    draws = np.stack([expected_best(rng.choice(values, len(values))) for _ in range(resamples)])
    alpha = (1 - level) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha], axis=0)
    return pd.DataFrame(
        {"k": np.arange(1, len(values) + 1), "expected_best": curve, "low": low, "high": high}
    )
