"""A stored study as the analysis sees it: `load_study` reads its cells once, with the chance
accuracy its diverged cells count at (and its per-epoch records when asked), and `score_study`
adds the robustness scores and their bootstrap intervals. Every command that reads a study (the
tables, scores, comparisons, reports, exports and the web server) and notebooks go through them,
so a study's one-line errors are written once.

`store` is a `robustbench_opt.storage.Store` (this module does not import storage).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd

from robustbench_opt.analysis.axes import axis_table, budget_table
from robustbench_opt.analysis.scores import (
    cell_means,
    chance_accuracy,
    compute_scores,
    require_measured,
)
from robustbench_opt.analysis.uncertainty import (
    LEVEL,
    RESAMPLES,
    SEED,
    Bootstrap,
    bootstrap,
    intervals,
)
from robustbench_opt.analysis.workloads import CrossWorkload, cross_workload
from robustbench_opt.datasets import dataset_info
from robustbench_opt.errors import UserError, unknown
from robustbench_opt.space import Axis, merge_axes


@dataclass(frozen=True)
class StudyCells:
    """A study's cells (one row per grid cell x seed, as `Store.cells_frame`)."""

    name: str
    cells: pd.DataFrame
    chance: float  # accuracy (a fraction) that a diverged cell without a result counts at
    epochs: pd.DataFrame | None = None  # `Store.epochs_frame`, when loaded with epochs=True
    spec: dict = field(default_factory=dict)  # the study's stored spec (its space, if any)


@dataclass(frozen=True)
class ScoredStudy:
    """A study's cells with their robustness scores and bootstrap intervals, and the choices
    they were computed with."""

    name: str
    cells: pd.DataFrame
    chance: float
    scores: pd.DataFrame  # `compute_scores`: one row per (optimizer, variant)
    boots: list[Bootstrap]
    intervals: pd.DataFrame  # `intervals(boots, level)`
    metric: str
    level: float
    resamples: int
    epochs: pd.DataFrame | None = None
    # What each axis costs (`axes.axis_table`): per (optimizer, variant, axis) sensitivity,
    # importance, best value, edge; the importance method named; the best-at-the-edge warnings.
    axes: pd.DataFrame = field(default_factory=pd.DataFrame)
    importance_method: str = ""
    edge_warnings: list[str] = field(default_factory=list)
    # E[best of k points] with its bootstrap band, per entry (`axes.budget_table`).
    budget: pd.DataFrame = field(default_factory=pd.DataFrame)
    spec: dict = field(default_factory=dict)
    # A multi-workload study: each workload scored as its own study, and the aggregate.
    workloads: list[ScoredStudy] = field(default_factory=list)
    cross: CrossWorkload | None = None


def _require_study(store, study: str) -> None:
    """One-line error for a study the database does not hold (closest match, existing names)."""
    if store.has_study(study):
        return
    names = [s.name for s in store.list_studies()]
    if not names:
        raise UserError(
            f"no study {study!r}: the database holds no studies yet; run one with "
            "`robustbench-opt run STUDY.yaml` or import a CSV with `robustbench-opt import`"
        )
    raise unknown("study", study, names, "list them with `robustbench-opt studies`")


def load_study(store, study: str, metric: str | None = None, *, epochs: bool = False) -> StudyCells:
    """`study`'s cells and chance accuracy, and its epochs when `epochs`.

    One-line UserErrors for a study the database does not hold, for one with no cells, and,
    when `metric` is given, for one with nothing that metric can score (`require_measured`).
    """
    _require_study(store, study)
    cells = store.cells_frame(study)
    if metric is None:
        if cells.empty:
            raise UserError(f"study {study!r} has no cells yet; run it or import results first")
    else:
        require_measured(cells, study, metric)
    spec = store.study_record(study).spec
    chance = chance_accuracy(spec)
    return StudyCells(study, cells, chance, store.epochs_frame(study) if epochs else None, spec)


def score_study(
    store,
    study: str,
    metric: str = "final",
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    default_cell: tuple[float, float] | None = None,
    *,
    epochs: bool = False,
) -> ScoredStudy:
    """`load_study` plus the scores on `metric` and their `level` bootstrap intervals
    (`resamples` resamples drawn with `seed`); `default_cell` is tunability's untuned setting.

    A multi-workload study is scored workload by workload (each with its own chance level and
    space), its entries named `optimizer / workload` (the workload folded into the variant), and
    `cross` holds the aggregate over the workloads (`analysis.workloads`)."""
    loaded = load_study(store, study, metric, epochs=epochs)
    args = (metric, level, resamples, seed, default_cell)
    if not loaded.spec.get("workloads"):
        return _scored(study, loaded.cells, loaded.chance, loaded.spec, *args, loaded.epochs)
    parts = []
    for workload in loaded.spec["workloads"]:
        name = workload["name"]
        cells = loaded.cells[loaded.cells["workload"] == name]
        if cells.empty:
            continue
        chance = dataset_info(workload["dataset"]).chance
        parts.append(_scored(name, cells, chance, _workload_spec(loaded.spec, workload), *args))
    cross = cross_workload(parts, level=level) if len(parts) >= 2 else None
    folded = [_folded(part) for part in parts]
    return ScoredStudy(
        study,
        pd.concat([f.cells for f in folded], ignore_index=True),
        min(part.chance for part in parts),
        pd.concat([f.scores for f in folded], ignore_index=True),
        [b for f in folded for b in f.boots],
        pd.concat([f.intervals for f in folded], ignore_index=True),
        metric, level, resamples, loaded.epochs,
        pd.concat([f.axes for f in folded], ignore_index=True),
        parts[0].importance_method,
        [w for f in folded for w in f.edge_warnings],
        pd.concat([f.budget for f in folded], ignore_index=True),
        loaded.spec,
        workloads=parts,
        cross=cross,
    )  # fmt: skip


def _scored(
    name: str,
    cells: pd.DataFrame,
    chance: float,
    spec: dict,
    metric: str,
    level: float,
    resamples: int,
    seed: int,
    default_cell: tuple[float, float] | None,
    epochs: pd.DataFrame | None = None,
) -> ScoredStudy:
    scores = compute_scores(cells, metric, chance=chance, default_cell=default_cell)
    boots = bootstrap(
        cells, metric, chance=chance, resamples=resamples, seed=seed, default_cell=default_cell
    )
    means = cell_means(cells, metric, chance=chance)
    axes, method, warnings = axis_table(means, spec)
    return ScoredStudy(
        name, cells, chance, scores, boots, intervals(boots, level), metric, level, resamples,
        epochs, axes, method, warnings, budget_table(means, resamples, level, seed), spec,
    )  # fmt: skip


def _workload_spec(spec: dict, workload: dict) -> dict:
    """The study's spec as one workload sees it: its dataset and model, the study's axes
    merged with the workload's."""
    out = {**spec, "dataset": workload["dataset"], "model": workload["model"]}
    if spec.get("space"):
        shared = [Axis.from_dict(a) for a in spec["space"]["axes"]]
        own = [Axis.from_dict(a) for a in workload.get("space") or []]
        out["space"] = {**spec["space"], "axes": [a.to_dict() for a in merge_axes(shared, own)]}
    return out


def _folded(part: ScoredStudy) -> ScoredStudy:
    """A workload's scores with the workload folded into the variant: `workload` (or
    `workload / variant` when the study has variants)."""
    several = part.scores["variant"].nunique() > 1

    def fold(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty or "variant" not in frame:
            return frame
        variant = frame["variant"].map(lambda v: f"{part.name} / {v}" if several else part.name)
        return frame.assign(variant=variant)

    boots = [
        dataclasses.replace(b, variant=f"{part.name} / {b.variant}" if several else part.name)
        for b in part.boots
    ]
    return dataclasses.replace(
        part,
        cells=fold(part.cells),
        scores=fold(part.scores),
        intervals=fold(part.intervals),
        axes=fold(part.axes),
        budget=fold(part.budget),
        boots=boots,
        edge_warnings=[f"{part.name}: {warning}" for warning in part.edge_warnings],
    )
