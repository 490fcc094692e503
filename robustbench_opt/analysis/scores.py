"""Robustness scores of each optimizer over its lr x weight-decay grid.

Longer than 400 lines: every measure and the one divergence policy they share live here, so
that no score can count a diverged cell differently from another.

Pure pandas/numpy. Inputs are frames shaped like `Store.cells_frame` (one row per trial: a grid
cell x seed); accuracies are fractions in [0, 1]. Seeds are averaged within each grid cell first,
then the measures run over the grid cells of each (optimizer, variant).

Divergence policy (one place, used by every score, table, curve and heatmap): a diverged trial
counts at its measured accuracy when it has one, else at chance (1 / number of classes), and is
flagged; it is never dropped. A failed, running or pending trial is missing. A robustness score
must never improve because a cell blew up.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import gammaln

from robustbench_opt.datasets import dataset_info
from robustbench_opt.errors import UserError, unknown
from robustbench_opt.states import DIVERGED, DONE, FAILED, FINISHED, PENDING, RUNNING

ENTRY = ["optimizer", "variant"]
POINT = [*ENTRY, "point_key"]  # one point of an entry's space: the seeds of a cell
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
DIVERGED_NOTE = (
    "diverged cells count at their measured accuracy, or at chance when none was measured, "
    "and are flagged; failed and pending cells are missing"
)
DEFAULT_CLASSES = 10  # studies that name neither (the paper's tables are CIFAR-10)


@dataclass(frozen=True)
class Measure:
    """One robustness measure: its name in sentences and in table headers, its unit, which
    direction is better, and its formula."""

    label: str
    header: str
    unit: str  # "pct": accuracy points; "pct2": percent^2; "cells": share of cells; "ss": of SS
    better: str | None  # "higher", "lower", or None (descriptive)
    formula: str
    per_grid: bool = False  # needs the lr x wd layout (not only the pooled cells)


MEASURES: dict[str, Measure] = {
    "mean": Measure(
        "mean accuracy", "mean", "pct", "higher", "mean over cells of the seed-mean accuracy"
    ),
    "variance": Measure(
        "variance", "var", "pct2", "lower", "population variance (ddof=0) over cells"
    ),
    "std": Measure("standard deviation", "std", "pct", "lower", "sqrt(variance)"),
    "min": Measure("worst cell", "worst", "pct", "higher", "min over cells"),
    "max": Measure("best cell", "best", "pct", "higher", "max over cells"),
    "range": Measure("range", "range", "pct", "lower", "max - min over cells"),
    "regret": Measure(
        "regret", "regret", "pct", "lower", "best cell - mean: expected loss of a random cell"
    ),
    "near_best_share": Measure(
        "share near the best",
        "near best",
        "cells",
        "higher",
        "share of cells within 1 point of the best cell",
    ),  # fmt: skip
    "lr_sensitivity": Measure(
        "lr sensitivity",
        "lr sens",
        "pct",
        "lower",
        "mean over wd of: mean over lr of (best lr's acc - acc), each cell floored at chance",
        per_grid=True,
    ),  # fmt: skip
    "tunability": Measure(
        "tunability",
        "tunability",
        "pct",
        "lower",
        "best cell - default cell (Probst et al. 2019); default: the grid's centre cell",
        per_grid=True,
    ),  # fmt: skip
    "var_share_lr": Measure(
        "variance share of lr",
        "var share lr",
        "ss",
        None,
        "SS between lr rows / total SS (complete grids)",
        True,
    ),  # fmt: skip
    "var_share_wd": Measure(
        "variance share of wd",
        "var share wd",
        "ss",
        None,
        "SS between wd columns / total SS (complete grids)",
        True,
    ),  # fmt: skip
}
BUDGETS = (1, 2, 5, 10, 25)  # cells tried at random, for the E[best@n] columns


def metric_column(metric: str) -> str:
    """The cells_frame column behind a metric choice."""
    if metric not in METRICS:
        raise unknown("metric", metric, METRICS, "set metric to final, best or val")
    return METRICS[metric]


def chance_accuracy(spec: Mapping[str, Any]) -> float:
    """Chance accuracy (a fraction) for a study's registered spec: 1 / its number of classes.

    An imported study stores `num_classes` (`import --classes`); a run study names its dataset,
    whose registry entry has the chance level; a study that names neither has 10 classes."""
    if spec.get("num_classes"):
        return 1.0 / int(spec["num_classes"])
    if spec.get("dataset") is None:
        return 1.0 / DEFAULT_CLASSES
    return dataset_info(str(spec["dataset"])).chance


def counted_values(cells: pd.DataFrame, metric: str, chance: float) -> pd.Series:
    """Each trial's accuracy as the divergence policy counts it (module docstring): measured
    when finished with a value, `chance` when diverged without one, NaN when missing."""
    column = metric_column(metric)
    measured = cells["state"].isin(FINISHED) & cells[column].notna()
    at_chance = cells["state"].eq(DIVERGED) & cells[column].isna()
    return cells[column].where(measured, np.where(at_chance, chance, np.nan)).astype(float)


def cell_axes(cells: pd.DataFrame) -> list[dict[str, Any]]:
    """Each trial's axis values: the frame's `axes`, else (a frame built without them, an
    imported study) its lr and weight decay."""
    if "axes" in cells:
        return list(cells["axes"])
    pairs = zip(cells["lr"], cells["weight_decay"], strict=True)
    return [{"lr": float(lr), "weight_decay": float(wd)} for lr, wd in pairs]


def point_keys(cells: pd.DataFrame) -> pd.Series:
    """Which point of its entry's space each trial is: `#INDEX` in a sampled design, else its
    axis values (lr and weight decay for cells stored without a space, or imported)."""
    points = cells["point"] if "point" in cells else [None] * len(cells)
    keys = [
        f"#{int(point)}" if point is not None and point == point else _values_key(axes)
        for point, axes in zip(points, cell_axes(cells), strict=True)
    ]
    return pd.Series(keys, index=cells.index, dtype=object)


def _values_key(axes: Mapping[str, Any]) -> str:
    return ",".join(
        f"{k}={v:.12g}" if isinstance(v, float) else f"{k}={v}" for k, v in axes.items()
    )


def axis_names(cells: pd.DataFrame) -> list[str]:
    """The axes of a study's space, in order ([lr, weight_decay] without a space)."""
    if "axes" not in cells or cells.empty:
        return ["lr", "weight_decay"]
    return list(dict.fromkeys(name for axes in cells["axes"] for name in axes))


def lr_wd_grid(cells: pd.DataFrame) -> bool:
    """Whether every entry's space is a grid over lr and weight decay only (the layout the
    per-grid measures need: lr sensitivity, tunability, variance shares)."""
    sampled = "point" in cells and cells["point"].notna().any()
    return not sampled and set(axis_names(cells)) <= {"lr", "weight_decay"}


def cell_means(cells: pd.DataFrame, metric: str = "final", *, chance: float) -> pd.DataFrame:
    """One row per point of each entry's space (a grid cell): seed-mean accuracy `acc` under the
    divergence policy, `seeds` counted, `seed_std` (ddof=1), `diverged` (any seed diverged),
    `at_chance` (any seed counted at chance) and trial counts per state, with the point's lr,
    weight decay and `axes`. `acc` is NaN when no seed of the cell has a result (pending,
    running or failed only)."""
    value = counted_values(cells, metric, chance)
    diverged = cells["state"].eq(DIVERGED)
    at_chance = diverged & cells[metric_column(metric)].isna()
    work = pd.DataFrame(
        {
            **{key: cells[key] for key in ENTRY},
            "point_key": point_keys(cells),
            "lr": cells["lr"],
            "weight_decay": cells["weight_decay"],
            "axes": cell_axes(cells),
            "value": value,
            "is_diverged": diverged,
            "is_at_chance": at_chance,
            "is_failed": cells["state"].eq(FAILED),
            "is_running": cells["state"].eq(RUNNING),
            "is_pending": cells["state"].eq(PENDING),
        }
    )
    grouped = work.groupby(POINT, sort=False, dropna=False)  # entries in the study's order
    out = grouped.agg(
        lr=("lr", "first"),
        weight_decay=("weight_decay", "first"),
        axes=("axes", "first"),
        acc=("value", "mean"),
        seeds=("value", "count"),
        seed_std=("value", "std"),
        trials=("value", "size"),
        diverged=("is_diverged", "any"),
        at_chance=("is_at_chance", "any"),
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
    chunk = max(1, 2_000_000 // max(total, 1))  # bound the (n x i) matrix to ~16 MB
    for start in range(0, total, chunk):
        n = np.arange(start + 1, min(total, start + chunk) + 1)
        out[start : start + len(n)] = expected_best_weights(total, n) @ v
    return out


def expected_best_weights(total: int, budgets: np.ndarray) -> np.ndarray:
    """(len(budgets), total) matrix: P(the max of a random n-subset is the i-th smallest)."""
    i = np.arange(1, total + 1, dtype=float)
    n = np.asarray(budgets, dtype=float)[:, None]
    valid = i[None, :] >= n
    i_minus_n = np.where(valid, i[None, :] - n, 0.0)
    log_p = (
        gammaln(i)[None, :]
        - gammaln(n)
        - gammaln(i_minus_n + 1.0)
        - (gammaln(total + 1.0) - gammaln(n + 1.0) - gammaln(total - n + 1.0))
    )
    return np.where(valid, np.exp(log_p), 0.0)


def pooled_measures(values: np.ndarray) -> dict[str, np.ndarray]:
    """Measures that ignore the grid's layout, for a (B, N) batch of cell accuracies (no NaN)."""
    mean = values.mean(axis=1)
    variance = values.var(axis=1)
    low, high = values.min(axis=1), values.max(axis=1)
    near = (values >= high[:, None] - NEAR_BEST - 1e-12).mean(axis=1)
    out = {
        "mean": mean,
        "variance": variance,
        "std": np.sqrt(variance),
        "min": low,
        "max": high,
        "range": high - low,
        "regret": high - mean,
        "near_best_share": near,
    }
    budgets = [n for n in BUDGETS if n <= values.shape[1]]
    if budgets:
        weights = expected_best_weights(values.shape[1], np.array(budgets))
        best_at = np.sort(values, axis=1) @ weights.T
        out |= {f"e_best_{n}": best_at[:, k] for k, n in enumerate(budgets)}
    return out


def lr_losses(grid: np.ndarray, chance: float) -> np.ndarray:
    """(B, n_wd): per wd column, mean over lr of (best lr's accuracy - accuracy), every cell
    floored at chance first; missing cells (NaN) are left out."""
    floored = np.maximum(grid, chance)  # NaN stays NaN
    with _quiet_nan_warnings():
        return np.nanmean(np.nanmax(floored, axis=1, keepdims=True) - floored, axis=1)


def grid_measures(grid: np.ndarray, chance: float, default: tuple[int, int]) -> dict:
    """Layout measures for a (B, n_lr, n_wd) batch of grids (NaN = missing cell)."""
    with np.errstate(invalid="ignore"), _quiet_nan_warnings():
        best = np.nanmax(grid.reshape(len(grid), -1), axis=1)
        out = {
            "lr_sensitivity": np.nanmean(lr_losses(grid, chance), axis=1),
            "tunability": best - grid[:, default[0], default[1]],
        }
        complete = ~np.isnan(grid).any(axis=(1, 2))
        centred = grid - grid.mean(axis=(1, 2), keepdims=True)
        total = (centred**2).sum(axis=(1, 2))
        n_lr, n_wd = grid.shape[1:]
        ss_lr = n_wd * (centred.mean(axis=2) ** 2).sum(axis=1)
        ss_wd = n_lr * (centred.mean(axis=1) ** 2).sum(axis=1)
        ok = complete & (total > 0)
        safe = np.where(ok, total, 1.0)
        out["var_share_lr"] = np.where(ok, ss_lr / safe, np.nan)
        out["var_share_wd"] = np.where(ok, ss_wd / safe, np.nan)
    return out


@contextmanager
def _quiet_nan_warnings() -> Iterator[None]:
    """All-NaN slices give NaN here by design (a wd column with no result)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass(frozen=True)
class EntryGrid:
    """One (optimizer, variant)'s cells as an lr x wd grid of seed-mean accuracies."""

    optimizer: str
    variant: str
    lrs: np.ndarray  # ascending
    wds: np.ndarray  # ascending
    grid: np.ndarray  # (n_lr, n_wd), NaN = missing
    default: tuple[int, int]  # index of the default cell (for tunability)


def entry_grids(
    means: pd.DataFrame, default_cell: tuple[float, float] | None = None
) -> list[EntryGrid]:
    """Each entry's grid from `cell_means` output; the default cell is `default_cell` (lr, wd)
    when given (it must be on the grid), else the grid's centre (lower median of each axis)."""
    out = []
    for (optimizer, variant), mine in means.groupby(ENTRY, sort=False):
        table = mine.pivot(index="lr", columns="weight_decay", values="acc")
        table = table.sort_index().sort_index(axis=1)
        lrs, wds = table.index.to_numpy(float), table.columns.to_numpy(float)
        default = ((len(lrs) - 1) // 2, (len(wds) - 1) // 2)
        if default_cell is not None:
            default = (_on_axis(lrs, default_cell[0], "lr"), _on_axis(wds, default_cell[1], "wd"))
        out.append(EntryGrid(optimizer, variant, lrs, wds, table.to_numpy(float), default))
    return out


def _on_axis(axis: np.ndarray, value: float, name: str) -> int:
    hits = np.flatnonzero(np.isclose(axis, value, rtol=1e-9, atol=0))
    if not len(hits):
        shown = ", ".join(f"{v:g}" for v in axis)
        raise UserError(f"default cell {name} {value:g} is not on the grid ({shown}); pick one")
    return int(hits[0])


def compute_scores(
    cells: pd.DataFrame,
    metric: str = "final",
    *,
    chance: float,
    default_cell: tuple[float, float] | None = None,
) -> pd.DataFrame:
    """Robustness scores per (optimizer, variant), in the order the study lists them.

    Accuracies stay fractions; variance is in fraction^2 (x 1e4 for the paper's percent^2).
    Best-cell ties go to the smaller lr, then the smaller wd. Trial counts per state are trials
    (grid cell x seed); `cells` counts grid cells with a result, `missing` those without,
    `diverged_cells` the cells where a seed diverged (counted, never dropped)."""
    means = cell_means(cells, metric, chance=chance)
    order = pd.MultiIndex.from_frame(cells[ENTRY].drop_duplicates())
    rows = []
    if not lr_wd_grid(cells):  # a search space: measures over its points, no lr x wd layout
        if default_cell is not None:
            raise UserError(
                "--default-cell needs an lr x weight-decay grid; this study samples a space: "
                "drop --default-cell"
            )
        rows = [_pooled_row(o, v, group) for (o, v), group in means.groupby(ENTRY, sort=False)]
    for entry in entry_grids(means, default_cell) if not rows else []:
        values = entry.grid[~np.isnan(entry.grid)]
        row: dict[str, Any] = {"optimizer": entry.optimizer, "variant": entry.variant}
        if len(values):
            row |= {k: float(v[0]) for k, v in pooled_measures(values[None, :]).items()}
            row |= {
                k: float(v[0])
                for k, v in grid_measures(entry.grid[None], chance, entry.default).items()
            }
            flat = np.where(np.isnan(entry.grid), -np.inf, entry.grid)
            best = np.unravel_index(np.argmax(flat), flat.shape)  # first max: smaller lr, wd
            row |= {"best_lr": entry.lrs[best[0]], "best_wd": entry.wds[best[1]]}
        row |= {
            "default_lr": entry.lrs[entry.default[0]],
            "default_wd": entry.wds[entry.default[1]],
        }
        rows.append(row)
    stats = pd.DataFrame(rows).set_index(ENTRY)
    mine = means.groupby(ENTRY, sort=False)
    measured = means[means["acc"].notna()]
    counts = pd.DataFrame(
        {
            "grid_cells": mine["acc"].size(),
            "cells": mine["acc"].count(),
            "diverged_cells": mine["diverged"].sum(),
            "at_chance": mine["at_chance"].sum(),
            "seeds": measured.groupby(ENTRY)["seeds"].max(),
            "seed_std": measured[measured["seeds"] >= 2].groupby(ENTRY)["seed_std"].mean(),
            "diverged": mine["n_diverged"].sum(),
            "failed": mine["n_failed"].sum(),
            "running": mine["n_running"].sum(),
            "pending": mine["n_pending"].sum(),
        }
    )
    out = counts.join(stats, how="left")
    out["missing"] = out["grid_cells"] - out["cells"]
    for column in SCORE_COLUMNS:
        if column not in out:
            out[column] = np.nan
    return out.reindex(order)[SCORE_COLUMNS].reset_index()


SCORE_COLUMNS = [
    "cells", "missing", "diverged_cells", "at_chance", "mean", "variance", "std", "min", "max",
    "range", "best_lr", "best_wd", "regret", "near_best_share", "lr_sensitivity", "tunability",
    "default_lr", "default_wd", "var_share_lr", "var_share_wd",
    *[f"e_best_{n}" for n in BUDGETS], "seeds", "seed_std", "diverged", "failed", "running",
    "pending",
]  # fmt: skip


def _pooled_row(optimizer: str, variant: str, points: pd.DataFrame) -> dict[str, Any]:
    """An entry's layout-free measures over its measured points, and its best point."""
    row: dict[str, Any] = {"optimizer": optimizer, "variant": variant}
    measured = points[points["acc"].notna()]
    if len(measured):
        values = measured["acc"].to_numpy(float)
        row |= {k: float(v[0]) for k, v in pooled_measures(values[None, :]).items()}
        best = measured.iloc[int(np.argmax(values))]
        row |= {"best_lr": best["lr"], "best_wd": best["weight_decay"]}
    return row


def lr_sensitivity_per_wd(
    cells: pd.DataFrame, metric: str = "final", *, chance: float
) -> pd.DataFrame:
    """Long frame: optimizer, variant, weight_decay, lr_sensitivity (fraction) per wd column."""
    means = cell_means(cells, metric, chance=chance)
    parts = []
    for entry in entry_grids(means):
        per_wd = lr_losses(entry.grid[None], chance)[0]
        parts.append(
            pd.DataFrame(
                {
                    "optimizer": entry.optimizer,
                    "variant": entry.variant,
                    "weight_decay": entry.wds,
                    "lr_sensitivity": per_wd,
                }  # fmt: skip
            )
        )
    return pd.concat(parts, ignore_index=True)


def expected_best_curves(
    cells: pd.DataFrame, metric: str = "final", *, chance: float
) -> pd.DataFrame:
    """Long frame: optimizer, variant, n, expected_best (fraction) for n = 1..cells."""
    means = cell_means(cells, metric, chance=chance)
    measured = means[means["acc"].notna()]
    parts = []
    for (optimizer, variant), group in measured.groupby(ENTRY, sort=False):
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
    counted = cells["state"].eq(DIVERGED) | (cells["state"].eq(DONE) & cells[column].notna())
    if counted.any():
        return
    if metric == "val" and cells["state"].isin(FINISHED).any():
        raise UserError(
            f"study {study!r} has no validation results; use metric final or best, "
            "or run it with a validation split (val_fraction > 0)"
        )
    states = cells["state"].value_counts().to_dict()
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    raise UserError(
        f"study {study!r} has no finished cells yet ({summary}); wait or rerun its failed cells"
    )
