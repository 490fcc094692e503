"""Does an optimizer's robustness hold across workloads? The aggregate of a multi-workload study.

Each workload is scored as a study of its own (`analysis.study.score_study` per workload). Over
the workloads, per optimizer (an entry label; the default variant when a study has several):

- ranks per workload on a measure (1 = best; ties share the mean rank) and their agreement,
  Kendall's W = 12 S / (m^2 (n^3 - n)) over m workloads and n optimizers, S the sum of squared
  deviations of the rank sums from their mean (1: every workload ranks alike; 0: no agreement,
  e.g. two workloads with reversed ranks); without a tie correction;
- performance profiles over the workloads (`compare.performance_profiles`, as AlgoPerf draws
  them): the share of workloads on which the optimizer's score is within a factor tau of the
  best;
- transfer: the accuracy lost when one hyperparameter point must serve every workload. The point
  with the best mean accuracy over the workloads, among the points every workload has (the same
  axis values), against each workload's own best point: the mean over workloads of
  (workload's best - that point's accuracy there).

The verdict names the optimizer that ranks first on most workloads, how many, the agreement, and
on how many of those workloads its lead over the runner-up is separable at the bootstrap level.

Pure pandas/numpy: no torch, no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from robustbench_opt.analysis.compare import StudyScores, performance_profiles, side_by_side
from robustbench_opt.analysis.scores import MEASURES, cell_means, point_keys
from robustbench_opt.analysis.uncertainty import compare_pair
from robustbench_opt.analysis.verdict import ranking

if TYPE_CHECKING:
    from robustbench_opt.analysis.study import ScoredStudy


@dataclass(frozen=True)
class CrossWorkload:
    """The aggregate over a study's workloads."""

    measure: str
    ranks: pd.DataFrame  # optimizer x workload: rank (1 = best)
    kendall_w: float
    profiles: pd.DataFrame  # optimizer x tau
    transfer: pd.DataFrame  # optimizer, point, mean_acc, loss (fractions)
    verdict: list[str]


def kendall_w(ranks: pd.DataFrame) -> float:
    """Kendall's W of an items (rows) x raters (columns) rank table without missing values."""
    n, m = ranks.shape
    if n < 2 or m < 2:
        return float("nan")
    totals = ranks.sum(axis=1).to_numpy(float)
    s = float(((totals - totals.mean()) ** 2).sum())
    return 12.0 * s / (m**2 * (n**3 - n))


def rank_table(scores: dict[str, pd.DataFrame], measure: str) -> pd.DataFrame:
    """Optimizers (rows, present on every workload) x workloads: ranks on `measure`."""
    higher = MEASURES[measure].better == "higher"
    columns = {}
    for name, frame in scores.items():
        default = frame[frame["variant"] == frame["variant"].iloc[0]]
        values = default.set_index("optimizer")[measure]
        columns[name] = values.rank(ascending=not higher, method="average")
    table = pd.DataFrame(columns).dropna()
    return table


def transfer_table(cells_by_workload: dict[str, tuple[pd.DataFrame, float]], metric: str):
    """Per optimizer: the point best on average over the workloads, its mean accuracy, and the
    mean loss against each workload's own best (module docstring)."""
    means = []
    for name, (cells, chance) in cells_by_workload.items():
        frame = cell_means(cells, metric, chance=chance)
        frame = frame[frame["variant"] == frame["variant"].iloc[0]]
        # Points are compared by their values (sampled indices differ across workload ranges).
        keyed = frame.assign(values=point_keys(frame.assign(point=None)), workload=name)
        means.append(keyed[["workload", "optimizer", "values", "acc"]])
    long = pd.concat(means, ignore_index=True).dropna(subset=["acc"])
    n_workloads = len(cells_by_workload)
    rows = []
    for optimizer, mine in long.groupby("optimizer", sort=False):
        wide = mine.pivot_table(index="values", columns="workload", values="acc")
        shared = wide.dropna()
        if shared.shape[1] < n_workloads or shared.empty:
            rows.append({"optimizer": optimizer, "point": None, "mean_acc": np.nan,
                         "loss": np.nan})  # fmt: skip
            continue
        best_point = shared.mean(axis=1).idxmax()
        own_best = wide.max()  # every point of each workload, shared or not
        loss = float((own_best - shared.loc[best_point]).mean())
        rows.append({"optimizer": optimizer, "point": best_point,
                     "mean_acc": float(shared.loc[best_point].mean()), "loss": loss})  # fmt: skip
    return pd.DataFrame(rows, columns=["optimizer", "point", "mean_acc", "loss"])


def cross_workload(
    workloads: Sequence[ScoredStudy], measure: str = "mean", level: float = 0.95
) -> CrossWorkload:
    """The aggregate of the module docstring over `workloads` (each scored as its own study,
    named after its workload; two or more)."""
    ranks = rank_table({x.name: x.scores for x in workloads}, measure)
    w = kendall_w(ranks)
    long = side_by_side([StudyScores(x.name, x.scores, x.intervals) for x in workloads], measure)
    profiles = performance_profiles(long, measure)
    transfer = transfer_table({x.name: (x.cells, x.chance) for x in workloads}, workloads[0].metric)
    return CrossWorkload(measure, ranks, w, profiles, transfer,
                         verdict(workloads, ranks, w, measure, level))  # fmt: skip


def verdict(
    workloads: Sequence[ScoredStudy],
    ranks: pd.DataFrame,
    w: float,
    measure: str,
    level: float,
) -> list[str]:
    """Plain words: who is first on most workloads, the agreement, and the separability."""
    if ranks.empty:
        return ["no optimizer was scored on every workload: nothing to aggregate"]
    firsts = (ranks == ranks.min()).sum(axis=1)
    leader = str(firsts.idxmax())
    wins = int(firsts.max())
    label = MEASURES[measure].label
    agree = "ranks agree" if w >= 0.7 else "ranks partly agree" if w >= 0.3 else "ranks disagree"
    lines = [
        f"{leader} is the most robust by {label} on {wins} of {ranks.shape[1]} workloads; "
        f"{agree} across workloads (Kendall's W = {w:.2f})."
    ]
    separable = 0
    for x in workloads:
        if x.name not in ranks or ranks.loc[leader, x.name] != ranks[x.name].min():
            continue
        ranked = ranking(x.scores, measure)
        ranked = ranked[ranked["variant"] == ranked["variant"].iloc[0]]
        if len(ranked) < 2:
            continue
        first, second = ranked.iloc[0], ranked.iloc[1]
        diff = compare_pair(
            x.scores, x.boots, first["optimizer"], second["optimizer"], measure,
            level,
        )  # fmt: skip
        separable += bool(diff.separable)
    if wins:
        lines.append(
            f"Its lead over the runner-up is separable at {100 * level:g}% on {separable} of "
            f"those {wins} workloads (bootstrap intervals of each workload's own study)."
        )
    return lines


def cross_frame(cross: CrossWorkload) -> pd.DataFrame:
    """The aggregate as one row per optimizer, for the CSV/JSON exports: `rank_<workload>`,
    `profile_tau_<tau>` (share of workloads), the transfer columns and Kendall's W."""
    ranks = cross.ranks.add_prefix("rank_")
    profiles = cross.profiles.rename(columns=lambda tau: "profile_" + tau.replace(" ", "_"))
    transfer = cross.transfer.set_index("optimizer")
    out = ranks.join(profiles).join(transfer).rename_axis("optimizer").reset_index()
    return out.assign(kendall_w=cross.kendall_w, measure=cross.measure)
