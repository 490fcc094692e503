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
    scores: pd.DataFrame, intervals: pd.DataFrame | None = None, wide: bool = False
) -> pd.DataFrame:
    """One string row per entry. Compact: cells, mean, variance and lr sensitivity with their
    intervals, and the best cell. Wide: every measure, E[best@n] for the n within the grid,
    and the trial counts."""
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
            "cells": cells,
        }
        measures = COMPACT if not wide else [m for m in MEASURES if m not in ("min", "max")]
        for name in measures:
            unit = MEASURE_UNITS[MEASURES[name].unit]
            text = measure_text(row, name, ci, ci_digits=2 if wide else 1)
            shown[f"{MEASURES[name].header} {unit}"] = text
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
                 resamples: int = 0) -> list[str]:  # fmt: skip
    """The caveats printed under every scores table."""
    notes = [
        f"metric: {METRIC_LABELS[metric]}; seeds averaged within each lr x wd cell first",
        f"{DIVERGED_NOTE} (chance = {100 * chance:.2f}%)",
        "variance: population (ddof=0) over cells, in percent^2; lr sensitivity: mean over wd "
        "of mean over lr of (best lr - acc), each cell floored at chance",
    ]
    if over:
        notes.append(
            f"[a, b]: {100 * level:g}% percentile bootstrap interval, {resamples} resamples "
            f"over {over}"
        )
    return notes
