"""Scores as people read them: percent with 2 decimals, intervals in brackets; shared by the CLI
and the report. The compact table fits 100 terminal columns; the wide one has every column."""

from __future__ import annotations

import math

import pandas as pd

from robustbench_opt.analysis.scores import BUDGETS, DIVERGED_NOTE, MEASURES, METRIC_LABELS
from robustbench_opt.analysis.tables import format_hparam

SCALES = {"pct": 100.0, "pct2": 1e4, "cells": 100.0, "ss": 100.0}
MEASURE_UNITS = {"pct": "%", "pct2": "%²", "cells": "% of cells", "ss": "% of SS"}
COMPACT = ("mean", "variance", "lr_sensitivity")  # the measures the compact table shows
COMPACT_SPACE = ("mean", "variance", "regret")  # ... for a space that is not lr x wd


def _num(value: float, scale: float = 100.0, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{scale * value:.{digits}f}"


def _hp(value: float) -> str:
    return "-" if value is None or math.isnan(value) else format_hparam(value)


def entry_label(optimizer: str, variant: str, several_variants: bool) -> str:
    """An entry's name: the optimizer, with its variant when the study has several."""
    return f"{optimizer} / {variant}" if several_variants else optimizer


def measure_text(
    row: pd.Series | object, name: str, ci: pd.Series | None, ci_digits: int = 2
) -> str:
    """`94.48 [93.70, 95.88]`: a measure in its display unit, with its interval when there is
    one."""
    scale = SCALES[MEASURES[name].unit]
    text = _num(getattr(row, name), scale)
    if ci is not None and f"{name}_lo" in ci and not math.isnan(ci[f"{name}_lo"]):
        lo, hi = (_num(ci[f"{name}_{end}"], scale, ci_digits) for end in ("lo", "hi"))
        text += f" [{lo}, {hi}]"
    return text


def scores_display(
    scores: pd.DataFrame,
    intervals: pd.DataFrame | None = None,
    wide: bool = False,
    space: bool = False,
) -> pd.DataFrame:
    """One string row per entry. Compact: cells, mean, variance and lr sensitivity with their
    intervals (regret instead of lr sensitivity for a `space` other than lr x wd), and the best
    cell. Wide: every measure, E[best@n] for the n within the grid, and the trial counts."""
    several = scores["variant"].nunique() > 1
    rows = []
    keyed = intervals.set_index(["optimizer", "variant"]) if intervals is not None else None
    for row in scores.itertuples(index=False):
        ci = keyed.loc[(row.optimizer, row.variant)] if keyed is not None else None
        cells = f"{row.cells}"
        if row.diverged_cells:
            cells += f" ({row.diverged_cells} div)"
        if row.missing:
            cells += f" +{row.missing} missing"
        shown: dict[str, str] = {
            "optimizer": entry_label(row.optimizer, row.variant, several),
            "points" if space else "cells": cells,
        }
        compact = COMPACT_SPACE if space else COMPACT
        measures = compact if not wide else [m for m in MEASURES if m not in ("min", "max")]
        if space:
            measures = [m for m in measures if not MEASURES[m].per_grid]
        for name in measures:
            unit = MEASURE_UNITS[MEASURES[name].unit]
            text = measure_text(row, name, ci, ci_digits=2 if wide else 1)
            shown[f"{MEASURES[name].header} {unit}"] = text
        if space:  # the best point's value on every axis is in the per-axis table
            shown["best %"] = _num(row.max)
        else:
            shown["best % (lr, wd)"] = f"{_num(row.max)} ({_hp(row.best_lr)}, {_hp(row.best_wd)})"
        if wide:
            shown["worst %"] = measure_text(row, "min", ci)
            shown["default (lr, wd)"] = f"{_hp(row.default_lr)}, {_hp(row.default_wd)}"
            for n in BUDGETS:
                if n <= row.cells:
                    shown[f"E[best@{n}] %"] = _num(getattr(row, f"e_best_{n}"))
            shown["seed std %"] = _num(row.seed_std)
            shown["diverged"] = str(row.diverged)
            shown["failed"] = str(row.failed)
            shown["pending"] = str(row.pending + row.running)
        rows.append(shown)
    frame = pd.DataFrame(rows)
    if wide:  # an E[best@n] column only where n is within some entry's grid
        frame = frame.fillna("-")
    return frame


def scores_notes(metric: str, chance: float, over: str | None = None, level: float = 0.95,
                 resamples: int = 0, space: bool = False) -> list[str]:  # fmt: skip
    """The caveats printed under every scores table (`space`: a space other than lr x wd)."""
    if space:
        notes = [
            f"metric: {METRIC_LABELS[metric]}; seeds averaged within each point of the space first",
            f"{DIVERGED_NOTE} (chance = {100 * chance:.2f}%)",
            "variance: population (ddof=0) over points, in percent^2; regret: best point - "
            "mean, the expected loss of a point drawn at random",
        ]
    else:
        notes = [
            f"metric: {METRIC_LABELS[metric]}; seeds averaged within each lr x wd cell first",
            f"{DIVERGED_NOTE} (chance = {100 * chance:.2f}%)",
            "variance: population (ddof=0) over cells, in percent^2; lr sensitivity: mean over "
            "wd of mean over lr of (best lr - acc), each cell floored at chance",
        ]
    if over:
        notes.append(
            f"[a, b]: {100 * level:g}% percentile bootstrap interval, {resamples} resamples "
            f"over {over}"
        )
    return notes


BUDGET_SHOWN = (1, 2, 4, 8, 16)  # k columns of the E[best of k] table (those <= points)


def axes_display(axes: pd.DataFrame, several_variants: bool) -> pd.DataFrame:
    """One string row per (entry, axis): sensitivity in points, importance in %, the best
    point's value, and whether it sits at the edge of the axis's range."""
    rows = []
    for row in axes.itertuples(index=False):
        best = row.best_value
        if isinstance(best, float) and best.is_integer() and abs(best) >= 1:
            best = int(best)  # an integer axis (batch_size) read back as a float
        rows.append(
            {
                "optimizer": entry_label(row.optimizer, row.variant, several_variants),
                "axis": row.axis,
                "sensitivity (pts)": _num(row.sensitivity),
                "importance %": _num(row.importance, digits=1),
                "best value": _hp(best) if isinstance(best, float) else str(best),
                "at edge": row.at_edge if isinstance(row.at_edge, str) else "-",
            }
        )
    return pd.DataFrame(rows)


def budget_display(budget: pd.DataFrame, several_variants: bool) -> pd.DataFrame:
    """One string row per entry: E[best of k] % with its band, for the k in BUDGET_SHOWN."""
    rows = []
    for (optimizer, variant), curve in budget.groupby(["optimizer", "variant"], sort=False):
        shown = {"optimizer": entry_label(optimizer, variant, several_variants)}
        at = curve.set_index("k")
        for k in BUDGET_SHOWN:
            if k in at.index:
                point = at.loc[k]
                shown[f"k={k}"] = (
                    f"{_num(point.expected_best, digits=1)} "
                    f"[{_num(point.low, digits=1)}, {_num(point.high, digits=1)}]"
                )
        shown["points"] = str(int(at.index.max()))
        rows.append(shown)
    return pd.DataFrame(rows).fillna("-")
