"""Robustness scores of each optimizer over its lr x weight-decay grid.

Pure pandas/numpy. Inputs are frames shaped like `Store.cells_frame` (one row per trial: a grid
cell x seed); accuracies are fractions in [0, 1]. Seeds are averaged within each grid cell first,
then the statistics run over the grid cells of each (optimizer, variant).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import gammaln

from robustbench_opt.errors import UserError, unknown
from robustbench_opt.states import FINISHED as MEASURED_STATES

GRID = ["optimizer", "variant", "lr", "weight_decay"]
ENTRY = ["optimizer", "variant"]
METRICS: dict[str, str] = {
    "final": "final_test_acc",
    "best": "best_test_acc",
    "val": "test_acc_at_best_val",
}
METRIC_LABELS: dict[str, str] = {
    "final": "test accuracy after the last epoch",
    "best": "best epoch chosen on test (optimistic)",
    "val": "test accuracy at the epoch chosen on validation",
}
NEAR_BEST = 0.01  # "near the best": within 1 accuracy point of the best cell
DIVERGED_NOTE = "diverged cells count with their measured accuracy"


def metric_column(metric: str) -> str:
    """The cells_frame column behind a --metric choice."""
    if metric not in METRICS:
        raise unknown("metric", metric, METRICS, "pass --metric final, best or val")
    return METRICS[metric]


def cell_means(cells: pd.DataFrame, metric: str = "final") -> pd.DataFrame:
    """One row per grid cell: seed-mean accuracy `acc`, `seeds` measured, `seed_std` (ddof=1),
    `diverged` (any seed diverged) and trial counts per state. `acc` is NaN when no seed of the
    cell has a measurement (pending, running or failed only)."""
    column = metric_column(metric)
    measured = cells["state"].isin(MEASURED_STATES) & cells[column].notna()
    work = pd.DataFrame(
        {
            **{key: cells[key] for key in GRID},
            "value": cells[column].where(measured),
            "is_diverged": cells["state"].eq("diverged"),
            "is_failed": cells["state"].eq("failed"),
            "is_running": cells["state"].eq("running"),
            "is_pending": cells["state"].eq("pending"),
        }
    )
    grouped = work.groupby(GRID, sort=True, dropna=False)
    out = grouped.agg(
        acc=("value", "mean"),
        seeds=("value", "count"),
        seed_std=("value", "std"),
        trials=("value", "size"),
        diverged=("is_diverged", "any"),
        n_diverged=("is_diverged", "sum"),
        n_failed=("is_failed", "sum"),
        n_running=("is_running", "sum"),
        n_pending=("is_pending", "sum"),
    )
    return out.reset_index()


def expected_best(values: np.ndarray | list[float]) -> np.ndarray:
    """E[max of n cells drawn at random without replacement] for n = 1..N (Dodge et al. 2019).

    Exact order statistics: with values sorted ascending v_1 <= ... <= v_N, the maximum of a
    random n-subset is v_i with probability C(i-1, n-1) / C(N, n). Ties need no special case:
    tied values are interchangeable, so the expectation is the same whichever copy is "the" max.
    """
    v = np.sort(np.asarray(values, dtype=float))
    if not np.all(np.isfinite(v)):
        raise ValueError("expected_best needs finite values; drop unmeasured cells first")
    total = len(v)
    out = np.empty(total)
    i = np.arange(1, total + 1, dtype=float)
    log_total = gammaln(total + 1.0)
    chunk = max(1, 2_000_000 // max(total, 1))  # bound the (n x i) matrix to ~16 MB
    for start in range(0, total, chunk):
        n = np.arange(start + 1, min(total, start + chunk) + 1, dtype=float)[:, None]
        valid = i[None, :] >= n
        i_minus_n = np.where(valid, i[None, :] - n, 0.0)
        log_p = (
            gammaln(i)[None, :]
            - gammaln(n)
            - gammaln(i_minus_n + 1.0)
            - (log_total - gammaln(n + 1.0) - gammaln(total - n + 1.0))
        )
        out[start : start + len(n)] = np.where(valid, np.exp(log_p), 0.0) @ v
    return out


def compute_scores(cells: pd.DataFrame, metric: str = "final") -> pd.DataFrame:
    """Robustness scores per (optimizer, variant), in the order the study lists them.

    Accuracies stay fractions; variance is in fraction^2 (x 1e4 for the paper's percent^2).
    Best-cell ties go to the smaller lr, then the smaller wd. Trial counts per state are trials
    (grid cell x seed); `cells` counts grid cells with a result, `missing` those without."""
    means = cell_means(cells, metric)
    measured = means[means["acc"].notna()]
    grouped = measured.groupby(ENTRY, sort=True)
    stats = grouped["acc"].agg(
        cells="count", mean="mean", variance=lambda a: a.var(ddof=0), min="min", max="max"
    )
    stats["std"] = np.sqrt(stats["variance"])
    stats["range"] = stats["max"] - stats["min"]
    stats["regret"] = stats["max"] - stats["mean"]
    best_rows = measured.loc[grouped["acc"].idxmax()].set_index(ENTRY)
    stats["best_lr"] = best_rows["lr"]
    stats["best_wd"] = best_rows["weight_decay"]
    near = measured["acc"] >= measured.groupby(ENTRY)["acc"].transform("max") - NEAR_BEST - 1e-12
    stats["near_best_share"] = near.groupby([measured[k] for k in ENTRY]).mean()
    stats["seeds"] = grouped["seeds"].max()
    multi = measured[measured["seeds"] >= 2]
    stats["seed_std"] = multi.groupby(ENTRY)["seed_std"].mean()
    counts = means.groupby(ENTRY, sort=True).agg(
        grid_cells=("acc", "size"),
        diverged=("n_diverged", "sum"),
        failed=("n_failed", "sum"),
        running=("n_running", "sum"),
        pending=("n_pending", "sum"),
    )
    out = counts.join(stats, how="left")
    out["cells"] = out["cells"].fillna(0).astype(int)
    out["missing"] = out["grid_cells"] - out["cells"]
    columns = [
        "cells", "missing", "mean", "variance", "std", "min", "max", "range", "best_lr",
        "best_wd", "regret", "near_best_share", "seeds", "seed_std", "diverged", "failed",
        "running", "pending",
    ]  # fmt: skip
    order = pd.MultiIndex.from_frame(cells[ENTRY].drop_duplicates())
    return out.reindex(order)[columns].reset_index()


def expected_best_curves(cells: pd.DataFrame, metric: str = "final") -> pd.DataFrame:
    """Long frame: optimizer, variant, n, expected_best (fraction) for n = 1..cells."""
    means = cell_means(cells, metric)
    measured = means[means["acc"].notna()]
    parts = []
    for (optimizer, variant), group in measured.groupby(ENTRY, sort=True):
        curve = expected_best(group["acc"].to_numpy())
        parts.append(
            pd.DataFrame(
                {
                    "optimizer": optimizer,
                    "variant": variant,
                    "n": np.arange(1, len(curve) + 1),
                    "expected_best": curve,
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["optimizer", "variant", "n", "expected_best"])
    return pd.concat(parts, ignore_index=True)


def require_measured(cells: pd.DataFrame, study: str, metric: str) -> None:
    """One-line error when nothing in `cells` can be scored with `metric`."""
    column = metric_column(metric)
    if cells.empty:
        raise UserError(f"study {study!r} has no cells yet; run it or import results first")
    measured = cells["state"].isin(MEASURED_STATES) & cells[column].notna()
    if measured.any():
        return
    if metric == "val" and cells["state"].isin(MEASURED_STATES).any():
        raise UserError(
            f"study {study!r} has no validation results; use --metric final or best, "
            "or run it with a validation split (val_fraction > 0)"
        )
    states = cells["state"].value_counts().to_dict()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    raise UserError(
        f"study {study!r} has no finished cells yet ({summary}); wait or rerun its failed cells"
    )
