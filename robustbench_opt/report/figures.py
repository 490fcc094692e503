"""Plotly figures of one study. The only module (with its siblings) that imports plotly."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from robustbench_opt.analysis.scores import ENTRY, cell_means, expected_best_curves
from robustbench_opt.analysis.tables import format_hparam

COLORSCALE = "Viridis"
HEATMAP_COLUMNS = 3  # heatmaps per row


def plot_text(name: object) -> str:
    """A user-given name made inert for plotly, which renders a subset of HTML tags in text."""
    return html.escape(str(name), quote=True)


def entry_name(optimizer: str, variant: str, variants: int) -> str:
    """Display name of an (optimizer, variant) entry; the variant only when a study has several."""
    return plot_text(optimizer if variants == 1 else f"{optimizer} / {variant}")


def _entries(cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(optimizer, variant) pairs in the order the study lists them."""
    return list(dict.fromkeys(zip(cells["optimizer"], cells["variant"], strict=True)))


def heatmaps(cells: pd.DataFrame, metric: str, chance: float) -> go.Figure:
    """Annotated lr x wd heatmap per entry, all on one colour scale; diverged and missing marked."""
    means = cell_means(cells, metric, chance=chance)
    entries = _entries(cells)
    variants = means["variant"].nunique()
    measured = means["acc"].dropna() * 100
    zmin, zmax = (measured.min(), measured.max()) if len(measured) else (0.0, 100.0)
    rows = max(1, math.ceil(len(entries) / HEATMAP_COLUMNS))
    cols = min(HEATMAP_COLUMNS, max(1, len(entries)))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[entry_name(o, v, variants) for o, v in entries],
        horizontal_spacing=0.08,
        vertical_spacing=min(0.3, 0.5 / rows) if rows > 1 else 0.1,
    )
    for k, (optimizer, variant) in enumerate(entries):
        mine = means[(means["optimizer"] == optimizer) & (means["variant"] == variant)]
        acc = mine.pivot(index="lr", columns="weight_decay", values="acc").sort_index()
        acc = acc.sort_index(axis=1)
        div = mine.pivot(index="lr", columns="weight_decay", values="diverged")
        div = div.reindex(index=acc.index, columns=acc.columns).fillna(False).astype(bool)
        text = np.where(
            np.isnan(acc.to_numpy(dtype=float)),
            np.where(div.to_numpy(), "diverged", "missing"),
            np.char.add(
                np.char.mod("%.2f", 100 * np.nan_to_num(acc.to_numpy(dtype=float))),
                np.where(div.to_numpy(), "<br>diverged", ""),
            ),
        )
        fig.add_trace(
            go.Heatmap(
                z=100 * acc.to_numpy(dtype=float),
                x=[format_hparam(w) for w in acc.columns],
                y=[format_hparam(lr) for lr in acc.index],
                text=text,
                texttemplate="%{text}",
                coloraxis="coloraxis",
                name=entry_name(optimizer, variant, variants),
                hovertemplate="lr %{y}<br>wd %{x}<br>%{text}<extra>%{fullData.name}</extra>",
                xgap=1,
                ygap=1,
            ),
            row=k // cols + 1,
            col=k % cols + 1,
        )
        fig.update_xaxes(title_text="weight decay", type="category", row=k // cols + 1,
                         col=k % cols + 1)  # fmt: skip
        fig.update_yaxes(title_text="learning rate", type="category", autorange="reversed",
                         row=k // cols + 1, col=k % cols + 1)  # fmt: skip
    fig.update_layout(
        coloraxis={
            "colorscale": COLORSCALE,
            "cmin": zmin,
            "cmax": zmax,
            "colorbar": {"title": {"text": "test acc %"}},
        },  # fmt: skip
        height=max(380, 380 * rows),
        plot_bgcolor="#d9d9d9",
        title_text="Test accuracy per (lr, weight decay): one colour scale for all optimizers",
    )
    return fig


def accuracy_vs_lr(cells: pd.DataFrame, metric: str, chance: float) -> go.Figure:
    """Per entry: mean over its weight decays of the seed-mean accuracy, against lr (log)."""
    means = cell_means(cells, metric, chance=chance)
    variants = means["variant"].nunique()
    fig = go.Figure()
    for optimizer, variant in _entries(cells):
        mine = means[(means["optimizer"] == optimizer) & (means["variant"] == variant)]
        line = mine.groupby("lr")["acc"].agg(["mean", "max"]).sort_index()
        fig.add_trace(
            go.Scatter(
                x=line.index,
                y=100 * line["mean"],
                mode="lines+markers",
                name=entry_name(optimizer, variant, variants),
                customdata=100 * line["max"],
                hovertemplate="lr %{x}<br>mean over wd %{y:.2f}<br>best wd %{customdata:.2f}",
            )
        )
    fig.update_xaxes(type="log", title_text="learning rate")
    fig.update_yaxes(title_text="test acc % (mean over weight decays)")
    fig.update_layout(title_text="Accuracy against learning rate", height=420)
    return fig


def expected_best_figure(cells: pd.DataFrame, metric: str, chance: float) -> go.Figure:
    """Expected best accuracy after trying n random cells, per entry."""
    curves = expected_best_curves(cells, metric, chance=chance)
    variants = curves["variant"].nunique()
    fig = go.Figure()
    for (optimizer, variant), curve in curves.groupby(ENTRY, sort=False):
        fig.add_trace(
            go.Scatter(
                x=curve["n"],
                y=100 * curve["expected_best"],
                mode="lines+markers",
                name=entry_name(optimizer, variant, variants),
            )
        )
    fig.update_xaxes(title_text="cells tried at random (budget n)")
    fig.update_yaxes(title_text="expected best test acc %")
    fig.update_layout(title_text="Expected best accuracy against tuning budget", height=420)
    return fig


def learning_curves(
    cells: pd.DataFrame, epochs: pd.DataFrame, metric: str, chance: float
) -> go.Figure:
    """Train/test loss and accuracy per epoch of each entry's best cell (seed-mean)."""
    panels = [("train_loss", "train loss"), ("test_loss", "test loss"),
              ("train_acc", "train acc %"), ("test_acc", "test acc %")]  # fmt: skip
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in panels])
    means = cell_means(cells, metric, chance=chance)
    measured = means[means["acc"].notna()]
    variants = means["variant"].nunique()
    if measured.empty or epochs.empty:
        fig.add_annotation(text="no per-epoch metrics recorded (e.g. imported results)",
                           x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False)  # fmt: skip
        fig.update_layout(title_text="Learning curves", height=640)
        return fig
    best = measured.loc[measured.groupby(ENTRY, sort=False)["acc"].idxmax()]
    keyed = cells.merge(best[["optimizer", "variant", "lr", "weight_decay"]], how="inner")
    curves = epochs.merge(keyed[["cell_id", "optimizer", "variant"]], on="cell_id")
    curves = curves.groupby(["optimizer", "variant", "epoch"], sort=False).mean(numeric_only=True)
    colors = qualitative.Plotly
    for k, ((optimizer, variant), curve) in enumerate(curves.groupby(level=[0, 1], sort=False)):
        curve = curve.droplevel([0, 1]).sort_index()
        name = entry_name(optimizer, variant, variants)
        color = colors[k % len(colors)]
        for p, (column, _) in enumerate(panels):
            scale = 100 if column.endswith("acc") else 1
            fig.add_trace(
                go.Scatter(
                    x=curve.index,
                    y=scale * curve[column],
                    mode="lines",
                    name=name,
                    legendgroup=name,
                    showlegend=p == 0,
                    line={"color": color},
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
