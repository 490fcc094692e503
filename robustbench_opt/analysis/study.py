"""A stored study as the analysis sees it: `load_study` reads its cells once, with the chance
accuracy its diverged cells count at (and its per-epoch records when asked), and `score_study`
adds the robustness scores and their bootstrap intervals. Every command that reads a study (the
tables, scores, comparisons, reports, exports and the web server) and notebooks go through them,
so a study's one-line errors are written once.

`store` is a `robustbench_opt.storage.Store` (this module does not import storage).
"""

from __future__ import annotations

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
from robustbench_opt.errors import UserError, unknown


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
    (`resamples` resamples drawn with `seed`); `default_cell` is tunability's untuned setting."""
    loaded = load_study(store, study, metric, epochs=epochs)
    cells, chance = loaded.cells, loaded.chance
    scores = compute_scores(cells, metric, chance=chance, default_cell=default_cell)
    boots = bootstrap(
        cells, metric, chance=chance, resamples=resamples, seed=seed, default_cell=default_cell
    )
    means = cell_means(cells, metric, chance=chance)
    axes, method, warnings = axis_table(means, loaded.spec)
    return ScoredStudy(
        study, cells, chance, scores, boots, intervals(boots, level), metric, level, resamples,
        loaded.epochs, axes, method, warnings, budget_table(means, resamples, level, seed),
        loaded.spec,
    )  # fmt: skip
