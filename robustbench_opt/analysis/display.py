"""Scores as the paper prints them: percent with 2 decimals, shared by the CLI and the report."""

from __future__ import annotations

import math

import pandas as pd

from robustbench_opt.analysis.scores import DIVERGED_NOTE, METRIC_LABELS, NEAR_BEST
from robustbench_opt.analysis.tables import format_hparam

BUDGETS = (1, 2, 5, 10, 25)  # cells tried at random, shown in the expected-best columns


def _pct(value: float, scale: float = 100.0) -> str:
    return "-" if value is None or math.isnan(value) else f"{scale * value:.2f}"


def _hp(value: float) -> str:
    return "-" if value is None or math.isnan(value) else format_hparam(value)


def scores_display(scores: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """One string row per (optimizer, variant); E[best@n] columns for n in BUDGETS if `curves`."""
    rows = []
    for row in scores.itertuples(index=False):
        shown = {
            "optimizer": row.optimizer,
            "variant": row.variant,
            "cells": str(row.cells) + (f" (+{row.missing} missing)" if row.missing else ""),
            "mean %": _pct(row.mean),
            "var %²": _pct(row.variance, 1e4),
            "std %": _pct(row.std),
            "min %": _pct(row.min),
            "max %": _pct(row.max),
            "range %": _pct(row.range),
            "best lr": _hp(row.best_lr),
            "best wd": _hp(row.best_wd),
            "regret %": _pct(row.regret),
            f"within {100 * NEAR_BEST:g} of best": (
                "-" if math.isnan(row.near_best_share) else f"{100 * row.near_best_share:.0f}%"
            ),
            "seed std %": _pct(row.seed_std),
            "diverged": str(row.diverged),
            "failed": str(row.failed),
            "pending": str(row.pending + row.running),
        }
        if curves is not None:
            mine = curves[
                (curves["optimizer"] == row.optimizer) & (curves["variant"] == row.variant)
            ]
            by_n = dict(zip(mine["n"], mine["expected_best"], strict=True))
            for n in BUDGETS:
                shown[f"E[best@{n}] %"] = _pct(by_n[n]) if n in by_n else "-"
        rows.append(shown)
    return pd.DataFrame(rows)


def scores_notes(metric: str) -> list[str]:
    """The caveats printed under every scores table."""
    return [
        f"metric: {METRIC_LABELS[metric]}; seeds averaged within each lr x wd cell first",
        f"variance: population (ddof=0) over cells, in percent^2; {DIVERGED_NOTE}",
        "E[best@n]: expected best cell after trying n cells at random without replacement "
        "(Dodge et al. 2019)",
        "diverged / failed / pending count trials (cell x seed); seed std: mean over cells of the "
        "within-cell std (ddof=1)",
    ]
