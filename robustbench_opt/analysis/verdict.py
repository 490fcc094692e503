"""The answer a study gives, in plain words: which optimizer is more robust, by how much, and
whether the data can tell the top two apart.

The default measure is the mean accuracy over the grid: the accuracy a user can expect from a
hyperparameter setting picked at random from the grid (E[best@1]). It rewards a small spread and a
high level at once; spread-only measures (variance, range, lr sensitivity) rank an optimizer that
sits at chance everywhere as perfectly robust, so the verdict reports them beside the ranking,
never instead of it.
"""

from __future__ import annotations

import math

import pandas as pd

from robustbench_opt.analysis.display import MEASURE_UNITS, SCALES, entry_label
from robustbench_opt.analysis.scores import MEASURES
from robustbench_opt.analysis.uncertainty import Bootstrap, compare_pair
from robustbench_opt.errors import unknown

DEFAULT_MEASURE = "mean"
SPREAD_MEASURE = "lr_sensitivity"  # reported beside the ranking


def ranking(scores: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Entries with a value of `measure`, best first (ties keep the study's order)."""
    info = MEASURES.get(measure)
    if info is None or info.better is None:
        rankable = [m for m, i in MEASURES.items() if i.better]
        raise unknown("measure", measure, rankable, "pick a measure with a direction")
    ranked = scores[scores[measure].notna()]
    return ranked.sort_values(measure, ascending=info.better == "lower", kind="stable")


def _value(row: pd.Series, measure: str, ci: pd.DataFrame | None) -> str:
    """`94.48% [93.69, 95.88]`: the value in its unit, then its interval when there is one."""
    unit = MEASURES[measure].unit
    suffix = "%" if unit == "pct" else " " + MEASURE_UNITS[unit]
    text = f"{SCALES[unit] * row[measure]:.2f}{suffix}"
    if ci is not None:
        mine = ci[(ci["optimizer"] == row["optimizer"]) & (ci["variant"] == row["variant"])]
        lo = mine[f"{measure}_lo"].iloc[0] if f"{measure}_lo" in mine else math.nan
        if not math.isnan(lo):
            hi = mine[f"{measure}_hi"].iloc[0]
            text += f" [{SCALES[unit] * lo:.2f}, {SCALES[unit] * hi:.2f}]"
    return text


def verdict_lines(
    scores: pd.DataFrame,
    boots: list[Bootstrap],
    ci: pd.DataFrame,
    measure: str = DEFAULT_MEASURE,
    level: float = 0.95,
) -> list[str]:
    """A few sentences: the ranking with intervals, whether the top two are separable, the
    smallest spread, and which optimizers diverged."""
    info = MEASURES.get(measure)
    ranked = ranking(scores, measure)
    several = scores["variant"].nunique() > 1
    names = [entry_label(o, v, several) for o, v in zip(ranked["optimizer"], ranked["variant"],
                                                         strict=True)]  # fmt: skip
    if ranked.empty:
        return [f"no optimizer has a {info.label} yet"]
    lines = []
    listing = ", ".join(
        f"{k + 1}. {name} {_value(row, measure, ci)}"
        for k, (name, (_, row)) in enumerate(zip(names, ranked.iterrows(), strict=True))
    )
    lines.append(f"Ranked by {info.label} ({info.better} is better): {listing}.")
    if len(ranked) >= 2:
        diff = compare_pair(scores, boots, names[0], names[1], measure, level)
        scale = SCALES[info.unit]
        word = "separable" if diff.separable else "not separable"
        lines.append(
            f"{names[0]} is the most robust by {info.label}; against {names[1]} the difference "
            f"is {scale * diff.difference:+.2f} [{scale * diff.low:+.2f}, {scale * diff.high:+.2f}]"
            f": {word} at {100 * level:g}% (the interval "
            f"{'excludes' if diff.separable else 'includes'} 0)."
        )
    else:
        lines.append(f"{names[0]} is the only optimizer with results; nothing to compare.")
    spread = ranking(scores, SPREAD_MEASURE)
    if len(spread):
        top = spread.iloc[0]
        lines.append(
            f"Smallest {MEASURES[SPREAD_MEASURE].label}: "
            f"{entry_label(top['optimizer'], top['variant'], several)} "
            f"({100 * top[SPREAD_MEASURE]:.2f} points lost on average to a non-best lr)."
        )
    diverged = scores[scores["diverged_cells"] > 0]
    if len(diverged):
        parts = [
            f"{entry_label(r.optimizer, r.variant, several)} {r.diverged_cells} of "
            f"{r.cells + r.missing}"
            for r in diverged.itertuples(index=False)
        ]
        lines.append(
            "Diverged cells (counted, at chance when nothing was measured): "
            + ", ".join(parts)
            + "."
        )
    return lines
