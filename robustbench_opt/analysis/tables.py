"""Paper-style tables (the seed paper's Tables 1-3) as plain frames, ready to render.

Every table holds seed-mean accuracies (fractions) per grid cell under the divergence policy of
`scores`: `diverged` marks cells where a seed diverged (shown with their counted accuracy and
"(div)") and NaN marks cells with no result yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from robustbench_opt.analysis.scores import cell_means, compute_scores
from robustbench_opt.errors import UserError, unknown

KINDS = ("lr-optimizer", "lr-wd", "variant-optimizer")


@dataclass
class PaperTable:
    """A 2-D table of accuracies with its labels and the summary lines printed under it."""

    title: str
    corner: str  # top-left header cell, e.g. "lr \\ wd"
    values: pd.DataFrame  # fractions; NaN = no result
    diverged: pd.DataFrame  # same shape, bool
    footer: list[str] = field(default_factory=list)


def format_hparam(value: float) -> str:
    """Compact scientific notation as in the paper: 0.001 -> "1e-3", 0.05 -> "5e-2", 0 -> "0"."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def format_acc(value: float, diverged: bool) -> str:
    """A cell as printed: percent with 2 decimals, "(div)" after a diverged cell's counted
    accuracy, or "-" if missing."""
    if np.isnan(value):
        return "-"
    return f"{100 * value:.2f}" + (" (div)" if diverged else "")


def diverged_footer(chance: float) -> str:
    """The line under every table that shows a diverged cell."""
    return (
        "(div): a seed diverged; counted at its measured accuracy, or at chance "
        f"({100 * chance:.2f}%) when none was measured"
    )


def _pick(cells: pd.DataFrame, column: str, value: object) -> pd.DataFrame:
    """Rows whose `column` equals `value` (None keeps all); unknown values list the choices.
    Errors name the setting (the column), never a command-line flag."""
    if value is None:
        return cells
    choices = cells[column].unique().tolist()
    fix = f"set {column} to one of these"
    if column in ("lr", "weight_decay"):
        match = np.isclose(cells[column].to_numpy(dtype=float), float(value), rtol=1e-9, atol=0)
        if not match.any():
            shown = [format_hparam(c) for c in choices]
            raise unknown(column, value, shown, fix, (column,))
        return cells[match]
    if value not in choices:
        raise unknown(column, value, [str(c) for c in choices], fix, (column,))
    return cells[cells[column] == value]


def _single_value(cells: pd.DataFrame, keys: list[str], column: str, hint: str = "") -> None:
    """Error when some group of `keys` still spans several values of `column`."""
    groups = cells.groupby(keys, sort=False)[column]
    spread = groups.nunique()
    several = spread[spread > 1]
    if several.empty:
        return
    key = several.index[0] if len(keys) > 1 else (several.index[0],)
    values = sorted(groups.get_group(key).unique())
    shown = ", ".join(str(v) if column == "variant" else format_hparam(v) for v in values)
    raise UserError(
        f"{' / '.join(map(str, key))} has several {column} values ({shown}); "
        f"set {column} to one of them{hint}",
        (column,),
    )


def _pivot(
    cells: pd.DataFrame, metric: str, index: str, columns: str, chance: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seed-mean accuracy and diverged flag as index x columns; numbers ascend, names keep the
    order in which the study lists them."""
    means = cell_means(cells, metric, chance=chance)
    values = means.pivot(index=index, columns=columns, values="acc")
    diverged = means.pivot(index=index, columns=columns, values="diverged")
    rows = values.index if index in ("lr", "weight_decay") else cells[index].unique()
    cols = values.columns if columns in ("lr", "weight_decay") else cells[columns].unique()
    values = values.reindex(index=rows, columns=cols)
    diverged = diverged.reindex(index=rows, columns=cols).fillna(False).astype(bool)
    return values, diverged


def lr_wd_table(
    cells: pd.DataFrame,
    optimizer: str,
    metric: str = "final",
    variant: str | None = None,
    *,
    chance: float,
) -> PaperTable:
    """Table 3: rows lr, columns weight decay (both ascending), for one optimizer."""
    chosen = _pick(cells, "optimizer", optimizer)
    chosen = _pick(chosen, "variant", variant)
    _single_value(chosen, ["optimizer"], "variant")
    values, diverged = _pivot(chosen, metric, "lr", "weight_decay", chance)
    scores = compute_scores(chosen, metric, chance=chance).iloc[0]
    footer = [
        f"mean {100 * scores['mean']:.2f}  variance {1e4 * scores['variance']:.2f}"
        f"  (over {scores['cells']} cells, population variance in percent^2)"
    ]
    footer += [diverged_footer(chance)] if diverged.to_numpy().any() else []
    return PaperTable(f"{optimizer}: test accuracy (%)", "lr \\ wd", values, diverged, footer)


def lr_optimizer_table(
    cells: pd.DataFrame,
    metric: str = "final",
    variant: str | None = None,
    weight_decay: float | None = None,
    *,
    chance: float,
) -> PaperTable:
    """Table 2: rows lr (ascending), columns optimizers (study order)."""
    chosen = _pick(cells, "variant", variant)
    chosen = _pick(chosen, "weight_decay", weight_decay)
    _single_value(chosen, ["optimizer"], "variant")
    _single_value(chosen, ["optimizer"], "weight_decay", ", or show one optimizer's lr x wd table")
    values, diverged = _pivot(chosen, metric, "lr", "optimizer", chance)
    footer = [diverged_footer(chance)] if diverged.to_numpy().any() else []
    return PaperTable("test accuracy (%) per learning rate", "lr", values, diverged, footer)


def variant_optimizer_table(
    cells: pd.DataFrame,
    metric: str = "final",
    lr: float | None = None,
    weight_decay: float | None = None,
    *,
    chance: float,
) -> PaperTable:
    """Table 1: rows recipe variants (study order), columns optimizers, at one lr and wd each."""
    chosen = _pick(cells, "lr", lr)
    chosen = _pick(chosen, "weight_decay", weight_decay)
    _single_value(chosen, ["optimizer", "variant"], "lr")
    _single_value(chosen, ["optimizer", "variant"], "weight_decay")
    values, diverged = _pivot(chosen, metric, "variant", "optimizer", chance)
    footer = [diverged_footer(chance)] if diverged.to_numpy().any() else []
    return PaperTable("test accuracy (%) per recipe variant", "variant", values, diverged, footer)


def table_rows(table: PaperTable) -> list[list[str]]:
    """Header row then one row per index value, every cell formatted as the paper prints it."""
    header_fmt = format_hparam if table.values.columns.name == "weight_decay" else str
    index_fmt = format_hparam if table.values.index.name in ("lr", "weight_decay") else str
    rows = [[table.corner, *(header_fmt(c) for c in table.values.columns)]]
    for key in table.values.index:
        cells = [
            format_acc(float(table.values.at[key, col]), bool(table.diverged.at[key, col]))
            for col in table.values.columns
        ]
        rows.append([index_fmt(key), *cells])
    return rows
