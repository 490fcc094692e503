"""Plotly figures of one study. The only module (with its siblings) that imports plotly.

Every figure draws an (optimizer, variant) entry in the colour `entry_colors` gives it and lists
the entries in the study's order (first appearance in the cells frame), so one optimizer looks the
same everywhere. Heatmaps colour each cell by how far it sits below the study's best cell.
"""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative, sequential
from plotly.subplots import make_subplots

from robustbench_opt.analysis.scores import (
    ENTRY,
    cell_means,
    compute_scores,
    expected_best_curves,
)
from robustbench_opt.analysis.tables import format_hparam

Entry = tuple[str, str]  # (optimizer, variant)

# One colour per entry, in the study's order; distinct for the first len(PALETTE) entries.
PALETTE = list(dict.fromkeys(qualitative.Plotly + qualitative.Dark24 + qualitative.Light24))
HEATMAP_COLUMNS = 3  # heatmaps per row
SPAN = 10.0  # accuracy points below the study's best cell that the heatmap colour scale spans
BELOW_Z = 1.15 * SPAN  # where a cell further below than SPAN sits: the middle of its band
AXIS_MAX = 1.3 * SPAN  # the colour axis runs 0..AXIS_MAX; SPAN..AXIS_MAX is the "below" band
BELOW_COLOR = "#c8c8c8"  # one marked colour for every cell more than SPAN points below the best
MISSING_COLOR = "#ffffff"  # the plot background: failed/pending cells are not drawn
DIVERGED_MARK = "✕ div"
DIVERGED_OUTLINE = {"color": "#000000", "width": 2, "dash": "dot"}


def plot_text(name: object) -> str:
    """A user-given name made inert for plotly, which renders a subset of HTML tags in text."""
    return html.escape(str(name), quote=True)


def entry_name(optimizer: str, variant: str, variants: int) -> str:
    """Display name of an (optimizer, variant) entry; the variant only when a study has several."""
    return plot_text(optimizer if variants == 1 else f"{optimizer} / {variant}")


def study_entries(cells: pd.DataFrame) -> list[Entry]:
    """(optimizer, variant) pairs in the study's order: first appearance in `cells`."""
    return list(dict.fromkeys(zip(cells["optimizer"], cells["variant"], strict=True)))


def entry_colors(cells: pd.DataFrame) -> dict[Entry, str]:
    """The one colour of each entry, assigned in the study's order (the only place that picks)."""
    return {e: PALETTE[k % len(PALETTE)] for k, e in enumerate(study_entries(cells))}


def _look(cells: pd.DataFrame) -> dict[Entry, dict]:
    """Per entry: the trace settings every figure shares (name, colour, legend group and rank)."""
    variants = cells["variant"].nunique()
    return {
        e: {
            "name": entry_name(*e, variants),
            "legendgroup": entry_name(*e, variants),
            "legendrank": 1000 + k,  # plotly's default is 1000; ranks keep the study's order
            "color": color,
        }
        for k, (e, color) in enumerate(entry_colors(cells).items())
    }


def _line(look: dict, name: str | None = None, **trace: object) -> go.Scatter:
    """A line+marker trace in the entry's colour."""
    return go.Scatter(
        name=name or look["name"],
        legendgroup=look["legendgroup"],
        legendrank=look["legendrank"],
        line={"color": look["color"]},
        marker={"color": look["color"], **trace.pop("marker", {})},
        **trace,
    )


def heatmap_colorscale() -> list[list[float | str]]:
    """Viridis reversed over 0..SPAN points below the best (yellow = the best), then one flat
    BELOW_COLOR band up to the axis maximum for cells further below."""
    stops = sequential.Viridis[::-1]
    edge = SPAN / AXIS_MAX
    scale = [[edge * k / (len(stops) - 1), c] for k, c in enumerate(stops)]
    return [*scale, [edge, BELOW_COLOR], [1.0, BELOW_COLOR]]


def _grid(mine: pd.DataFrame, column: str) -> pd.DataFrame:
    """One entry's `cell_means` column as an lr (rows, ascending) x wd (columns) table."""
    table = mine.pivot(index="lr", columns="weight_decay", values=column)
    return table.sort_index().sort_index(axis=1)


def _cell_text(acc: float, diverged: bool, at_chance: bool) -> str:
    if math.isnan(acc):
        return "missing"
    text = f"{100 * acc:.2f}"
    if diverged:
        text += f"<br>{DIVERGED_MARK}" + (", chance" if at_chance else "")
    return text


def heatmaps(cells: pd.DataFrame, metric: str, chance: float) -> go.Figure:
    """Annotated lr x wd heatmap per entry. Colour: accuracy points below the study's best cell,
    clipped at SPAN (cells further below in BELOW_COLOR); each cell's accuracy is written in it.
    Diverged cells say DIVERGED_MARK (", chance" when counted at chance) and are outlined;
    failed/pending cells say "missing" on the bare background."""
    means = cell_means(cells, metric, chance=chance)
    looks = _look(cells)
    best = means["acc"].max()  # NaN when nothing is measured
    rows = max(1, math.ceil(len(looks) / HEATMAP_COLUMNS))
    cols = min(HEATMAP_COLUMNS, max(1, len(looks)))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[look["name"] for look in looks.values()],
        horizontal_spacing=0.08,
        vertical_spacing=min(0.3, 0.5 / rows) if rows > 1 else 0.1,
    )
    for title, look in zip(fig.layout.annotations, looks.values(), strict=False):
        title.font = {"color": look["color"], "size": 15}
    for k, ((optimizer, variant), look) in enumerate(looks.items()):
        row, col = k // cols + 1, k % cols + 1
        mine = means[(means["optimizer"] == optimizer) & (means["variant"] == variant)]
        table = _grid(mine, "acc")
        acc = table.to_numpy(dtype=float)
        diverged = _grid(mine, "diverged").fillna(False).to_numpy(dtype=bool)
        at_chance = _grid(mine, "at_chance").fillna(False).to_numpy(dtype=bool)
        gap = 100 * (best - acc)
        with np.errstate(invalid="ignore"):
            z = np.where(gap > SPAN, BELOW_Z, gap)
        text = [[_cell_text(*c) for c in zip(*r, strict=True)]
                for r in zip(acc, diverged, at_chance, strict=True)]  # fmt: skip
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[format_hparam(w) for w in table.columns],
                y=[format_hparam(lr) for lr in table.index],
                text=text,
                customdata=gap,
                texttemplate="%{text}",
                coloraxis="coloraxis",
                name=look["name"],
                legendgroup=look["legendgroup"],
                hovertemplate="lr %{y}<br>wd %{x}<br>%{text}<br>%{customdata:.2f} points below "
                "the best<extra>%{fullData.name}</extra>",
                xgap=1,
                ygap=1,
            ),
            row=row,
            col=col,
        )
        for i, j in zip(*np.nonzero(diverged), strict=True):
            fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                          line=DIVERGED_OUTLINE, row=row, col=col)  # fmt: skip
        fig.update_xaxes(title_text="weight decay", type="category", row=row, col=col)
        fig.update_yaxes(title_text="learning rate", type="category", autorange="reversed",
                         row=row, col=col)  # fmt: skip
    ticks = [0.0, SPAN / 2, SPAN]
    best_text = "-" if math.isnan(best) else f"{100 * best:.2f}%"
    fig.update_layout(
        coloraxis={
            "colorscale": heatmap_colorscale(),
            "cmin": 0.0,
            "cmax": AXIS_MAX,
            "colorbar": {
                "title": {"text": f"points below<br>the best cell<br>({best_text})"},
                "tickvals": [*ticks, BELOW_Z],
                "ticktext": ["0 = best", *[f"{t:g}" for t in ticks[1:]], f"> {SPAN:g} below"],
            },
        },
        height=max(380, 380 * rows),
        plot_bgcolor=MISSING_COLOR,
        title_text=(
            f"Test accuracy per (lr, weight decay), coloured by points below the study's best "
            f"cell; grey: more than {SPAN:g} below; {DIVERGED_MARK}: diverged (outlined)"
        ),
    )
    return fig


def accuracy_vs_lr(cells: pd.DataFrame, metric: str, chance: float) -> go.Figure:
    """Per entry: mean over its weight decays of the seed-mean accuracy, against lr (log);
    an x marker where a cell at that lr diverged."""
    means = cell_means(cells, metric, chance=chance)
    fig = go.Figure()
    for (optimizer, variant), look in _look(cells).items():
        mine = means[(means["optimizer"] == optimizer) & (means["variant"] == variant)]
        line = mine.groupby("lr").agg(mean=("acc", "mean"), max=("acc", "max"),
                                      diverged=("diverged", "any")).sort_index()  # fmt: skip
        fig.add_trace(
            _line(
                look,
                x=line.index,
                y=100 * line["mean"],
                mode="lines+markers",
                marker={"symbol": np.where(line["diverged"], "x", "circle"), "size": 9},
                customdata=100 * line["max"],
                hovertemplate="lr %{x}<br>mean over wd %{y:.2f}<br>best wd %{customdata:.2f}",
            )
        )
    fig.update_xaxes(type="log", title_text="learning rate")
    fig.update_yaxes(title_text="test acc % (mean over weight decays)")
    fig.update_layout(title_text="Accuracy against learning rate (x: a cell diverged)", height=420)
    return fig


def expected_best_figure(cells: pd.DataFrame, metric: str, chance: float) -> go.Figure:
    """Expected best accuracy after trying n random cells, per entry."""
    curves = expected_best_curves(cells, metric, chance=chance)
    fig = go.Figure()
    for (optimizer, variant), look in _look(cells).items():
        curve = curves[(curves["optimizer"] == optimizer) & (curves["variant"] == variant)]
        if len(curve):
            fig.add_trace(
                _line(look, x=curve["n"], y=100 * curve["expected_best"], mode="lines+markers")
            )
    fig.update_xaxes(title_text="cells tried at random (budget n)")
    fig.update_yaxes(title_text="expected best test acc %")
    fig.update_layout(title_text="Expected best accuracy against tuning budget", height=420)
    return fig


def learning_curves(
    cells: pd.DataFrame, epochs: pd.DataFrame, metric: str, chance: float
) -> go.Figure:
    """Train/test loss and accuracy per epoch of each entry's best cell (seed-mean, the best cell
    of the scores table); the legend names each curve's lr and wd."""
    panels = [("train_loss", "train loss"), ("test_loss", "test loss"),
              ("train_acc", "train acc %"), ("test_acc", "test acc %")]  # fmt: skip
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in panels])
    scores = compute_scores(cells, metric, chance=chance).dropna(subset=["best_lr"])
    if scores.empty or epochs.empty:
        fig.add_annotation(text="no per-epoch metrics recorded (e.g. imported results)",
                           x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)  # fmt: skip
        fig.update_layout(title_text="Learning curves", height=640)
        return fig
    best = scores.rename(columns={"best_lr": "lr", "best_wd": "weight_decay"})
    keyed = cells.merge(best[[*ENTRY, "lr", "weight_decay"]], how="inner")
    curves = epochs.merge(keyed[["cell_id", *ENTRY]], on="cell_id")
    curves = curves.groupby([*ENTRY, "epoch"]).mean(numeric_only=True)
    looks = _look(cells)
    for row in best.itertuples(index=False):
        entry = (row.optimizer, row.variant)
        if entry not in curves.index.droplevel("epoch"):
            continue
        curve = curves.loc[entry].sort_index()
        name = f"{looks[entry]['name']} (lr {format_hparam(row.lr)}, wd "
        name += f"{format_hparam(row.weight_decay)})"
        for p, (column, _) in enumerate(panels):
            scale = 100 if column.endswith("acc") else 1
            fig.add_trace(
                _line(
                    looks[entry],
                    name,
                    x=curve.index,
                    y=scale * curve[column],
                    mode="lines",
                    showlegend=p == 0,
                ),
                row=p // 2 + 1,
                col=p % 2 + 1,
            )
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title_text="Learning curves of each optimizer's best cell", height=640)
    return fig


def study_figures(
    cells: pd.DataFrame, epochs: pd.DataFrame, metric: str, chance: float
) -> dict[str, go.Figure]:
    """All figures of a report, keyed by a file-name-safe stem; `chance` is the accuracy a
    diverged cell without a measurement counts at (see analysis.scores)."""
    return {
        "heatmaps": heatmaps(cells, metric, chance),
        "accuracy_vs_lr": accuracy_vs_lr(cells, metric, chance),
        "learning_curves": learning_curves(cells, epochs, metric, chance),
        "expected_best": expected_best_figure(cells, metric, chance),
    }
