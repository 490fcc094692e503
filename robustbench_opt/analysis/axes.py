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
  value, or within `EDGE` of an end of a sampled axis's scale): the range may not hold the
  optimum; widen it (the Tuning Playbook's advice).
- E[best of k]: the expected best accuracy of k points drawn from the space without replacement
  (`scores.expected_best`), k = 1..n, with a seeded percentile bootstrap band over the points.

Pure pandas/numpy (Optuna for the sampled importance): no torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from robustbench_opt.analysis.scores import ENTRY, expected_best_weights
from robustbench_opt.space import Axis, merge_axes

BINS = 4  # strata per continuous axis of a sampled design
EDGE = 0.1  # a sampled point within this share of an axis's scale from an end is at its edge
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
    unit = axis.unit(best)
    return "low" if unit < EDGE else "high" if unit > 1 - EDGE else None


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
    acc: np.ndarray,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    ks: Sequence[int] | None = None,
) -> pd.DataFrame:
    """k, expected_best, low, high: E[best of k points] (`scores.expected_best`) and its
    percentile bootstrap band (the n points resampled with replacement, seeded), for `ks`
    (default 1..n). Memory stays bounded: resamples are drawn in chunks."""
    values = np.asarray(acc, dtype=float)
    n = len(values)
    ks = np.arange(1, n + 1) if ks is None else np.array([k for k in ks if k <= n])
    weights = expected_best_weights(n, ks)  # (len(ks), n)
    rng = np.random.default_rng(seed)
    chunk = max(1, 2_000_000 // max(n, 1))
    draws = []
    for start in range(0, resamples, chunk):
        picks = rng.choice(values, (min(chunk, resamples - start), n))
        draws.append(np.sort(picks, axis=1) @ weights.T)
    alpha = (1 - level) / 2
    low, high = np.quantile(np.concatenate(draws), [alpha, 1 - alpha], axis=0)
    curve = np.sort(values) @ weights.T
    return pd.DataFrame({"k": ks, "expected_best": curve, "low": low, "high": high})


# --------------------------------------------------------------------------- a stored study

BUDGET_KS = (1, 2, 4, 8, 16, 32, 64, 128)  # k shown in the E[best of k] table (<= points)


def entry_axes(spec: Mapping[str, Any], means: pd.DataFrame) -> dict[tuple[str, str], list[Axis]]:
    """Each (optimizer label, variant)'s axes from a study's stored spec (its space, with the
    entry's own axes merged in); a study without a space has lr and weight decay as list axes
    over the values its cells take."""
    out = {}
    space = spec.get("space")
    own = {o.get("label", o.get("name")): o.get("space") or [] for o in spec.get("optimizers", [])}
    for (optimizer, variant), points in means.groupby(ENTRY, sort=False):
        if space:
            shared = [Axis.from_dict(a) for a in space["axes"]]
            axes = merge_axes(shared, [Axis.from_dict(a) for a in own.get(optimizer, [])])
        else:
            names = list(dict.fromkeys(k for axes in points["axes"] for k in axes))
            axes = tuple(
                Axis(name, "list", tuple(sorted({a[name] for a in points["axes"]})))
                for name in names
            )
        out[(optimizer, variant)] = list(axes)
    return out


def points_frame(points: pd.DataFrame) -> pd.DataFrame:
    """An entry's `cell_means` rows as one column per axis, and `acc`."""
    return pd.DataFrame(list(points["axes"]), index=points.index).assign(acc=points["acc"])


def axis_table(means: pd.DataFrame, spec: Mapping[str, Any]) -> tuple[pd.DataFrame, str, list[str]]:
    """Per (optimizer, variant, axis): sensitivity, importance, the best point's value and
    whether it is at the edge of the range; the importance method; the edge warnings."""
    grid = (spec.get("space") or {}).get("design", "grid") == "grid"
    rows, warnings = [], []
    axes_of = entry_axes(spec, means)
    for (optimizer, variant), points in means.groupby(ENTRY, sort=False):
        axes = axes_of[(optimizer, variant)]
        frame = points_frame(points)
        entry = optimizer if variant == "default" else f"{optimizer} ({variant})"
        figures_of = axis_figures(frame, axes, grid)  # none below two measured points
        for figures, axis in zip(figures_of, axes if figures_of else [], strict=True):
            rows.append({"optimizer": optimizer, "variant": variant, **vars(figures)})
            if figures.at_edge:
                warnings.append(edge_warning(entry, figures, axis))
    columns = ["optimizer", "variant", *AxisFigures.__dataclass_fields__]
    return (
        pd.DataFrame(rows, columns=columns),
        GRID_IMPORTANCE if grid else SAMPLED_IMPORTANCE,
        warnings,
    )


def budget_table(means: pd.DataFrame, resamples: int, level: float, seed: int) -> pd.DataFrame:
    """Per (optimizer, variant): E[best of k points] and its bootstrap band for k = 1..n."""
    parts = []
    for (optimizer, variant), points in means.groupby(ENTRY, sort=False):
        acc = points["acc"].dropna().to_numpy(float)
        if len(acc):
            ks = None if len(acc) <= max(BUDGET_KS) else BUDGET_KS
            band = expected_best_band(acc, resamples, level, seed, ks)
            parts.append(band.assign(optimizer=optimizer, variant=variant))
    columns = ["optimizer", "variant", "k", "expected_best", "low", "high"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]
