"""Several studies side by side: one measure per optimizer and study, with intervals, and
performance profiles (Dahl et al. 2023, AlgoPerf) when two or more studies share optimizers.

Performance profile of optimizer o on a measure: rho_o(tau) = share of the compared studies in
which o's ratio to the study's best is at most tau. The ratio is best / value for a measure where
higher is better and value / best where lower is better (1 for the best; 1 when value equals a
best of 0, infinite for any other value over a best of 0). A study without o counts as not
within any tau.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from robustbench_opt.analysis.display import SCALES, entry_label
from robustbench_opt.analysis.scores import MEASURES
from robustbench_opt.errors import UserError, unknown

TAUS = (1.0, 1.01, 1.02, 1.05, 1.1, 1.25, 1.5, 2.0)


@dataclass(frozen=True)
class StudyScores:
    """One study's scores and intervals (from `compute_scores` and `intervals`)."""

    name: str
    scores: pd.DataFrame
    intervals: pd.DataFrame


def check_studies(names: list[str]) -> None:
    """At least two distinct studies to compare."""
    if len(names) < 2:
        raise UserError(
            f"compare needs two or more studies, got {len(names)} ({', '.join(names) or 'none'});"
            " name another study (list them with `robustbench-opt studies`)"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UserError(f"study {repeated[0]!r} is named twice; name each study once")


def check_measure(measure: str, ranked: bool = False) -> None:
    """An unknown measure (or one without a direction, when `ranked`) is a one-line error."""
    choices = [m for m, info in MEASURES.items() if info.better or not ranked]
    if measure not in choices:
        raise unknown("measure", measure, choices, "pick one of these")


def side_by_side(studies: list[StudyScores], measure: str) -> pd.DataFrame:
    """Long frame: study, optimizer (with variant when the study has several), value, lo, hi."""
    check_measure(measure)
    rows = []
    for study in studies:
        several = study.scores["variant"].nunique() > 1
        keyed = study.intervals.set_index(["optimizer", "variant"])
        for row in study.scores.itertuples(index=False):
            ci = keyed.loc[(row.optimizer, row.variant)]
            rows.append(
                {
                    "study": study.name,
                    "optimizer": entry_label(row.optimizer, row.variant, several),
                    "value": getattr(row, measure),
                    "lo": ci.get(f"{measure}_lo", np.nan),
                    "hi": ci.get(f"{measure}_hi", np.nan),
                    "over": ci["over"],
                }
            )
    return pd.DataFrame(rows)


def side_by_side_text(long: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Optimizers (rows) x studies (columns) of `value [lo, hi]` in the measure's display unit,
    "-" where an optimizer is absent; both in the order the studies list them."""
    scale = SCALES[MEASURES[measure].unit]
    text = [
        "-"
        if math.isnan(v)
        else f"{scale * v:.2f}"
        + ("" if math.isnan(lo) else f" [{scale * lo:.2f}, {scale * hi:.2f}]")
        for v, lo, hi in zip(long["value"], long["lo"], long["hi"], strict=True)
    ]
    table = long.assign(text=text).pivot(index="optimizer", columns="study", values="text")
    table = table.reindex(index=list(dict.fromkeys(long["optimizer"])),
                          columns=list(dict.fromkeys(long["study"])))  # fmt: skip
    return table.fillna("-")


def ratios(long: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Optimizers x studies: each value's ratio to its study's best (NaN: absent)."""
    check_measure(measure, ranked=True)
    wide = long.pivot(index="optimizer", columns="study", values="value")
    wide = wide.reindex(index=list(dict.fromkeys(long["optimizer"])),
                        columns=list(dict.fromkeys(long["study"])))  # fmt: skip
    higher = MEASURES[measure].better == "higher"
    best = wide.max() if higher else wide.min()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = best / wide if higher else wide / best
    ratio = ratio.where(~(wide == best), 1.0)  # the best, and value == best == 0
    return ratio.where(wide.notna())


def performance_profiles(long: pd.DataFrame, measure: str, taus=TAUS) -> pd.DataFrame:
    """Optimizers x tau: share of studies where the optimizer's ratio is at most tau."""
    ratio = ratios(long, measure)
    n_studies = ratio.shape[1]
    table = {
        f"tau {tau:g}": ((ratio <= tau + 1e-12).sum(axis=1) / n_studies).astype(float)
        for tau in taus
    }
    return pd.DataFrame(table, index=ratio.index)


def shared_optimizers(long: pd.DataFrame) -> list[str]:
    """Optimizers present in two or more of the compared studies."""
    counts = long.groupby("optimizer", sort=False)["study"].nunique()
    return [name for name, n in counts.items() if n >= 2]
