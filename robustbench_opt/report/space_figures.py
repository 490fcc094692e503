"""Figures of a study over a search space (any axes, grid or sampled design).

- `pair_figure`: one panel per entry that has both axes. A grid design draws a heatmap of its
  cells, each the best over the other axes (the best point, as the sensitivity reads it); a
  sampled design draws every point, coloured by accuracy, on the axes' scales. Colours follow
  the lr x wd heatmaps: points below the study's best, clipped at SPAN, grey beyond; diverged
  cells say so and are outlined (sampled: drawn as an x).
- `isolation_figure`: per axis, accuracy against the axis's value, every point, and each
  stratum's best point (the others at their best: the line the sensitivity reads) on the
  axis's scale (log axes on a log x axis; one_minus_log axes plot 1 - value on a log x axis).
- `budget_figure`: E[best of k] with its bootstrap band per entry (`analysis.axes`), and the
  best-so-far in the design's own sampling order (the cumulative maximum by point index).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from robustbench_opt.analysis.axes import entry_axes, strata
from robustbench_opt.analysis.scores import ENTRY, cell_means
from robustbench_opt.analysis.study import ScoredStudy
from robustbench_opt.analysis.tables import format_hparam
from robustbench_opt.report.figures import (
    AXIS_MAX,
    BELOW_Z,
    DIVERGED_OUTLINE,
    HEATMAP_COLUMNS,
    MISSING_COLOR,
    SPAN,
    _cell_text,
    _look,
    heatmap_colorscale,
    plot_text,
)
from robustbench_opt.space import Axis

Entry = tuple[str, str]
PAIRS_SHOWN = 3  # pairs of the most important axes the report lists first


def space_points(scored: ScoredStudy) -> dict[Entry, tuple[list[Axis], pd.DataFrame]]:
    """Per entry: its axes and its points (one row per point, in sampling order: a column per
    axis, `acc`, `diverged`, `at_chance`, `point`). Workloads are folded into the variant as
    in the scores."""
    out: dict[Entry, tuple[list[Axis], pd.DataFrame]] = {}
    for part in scored.workloads or [scored]:
        means = cell_means(part.cells, part.metric, chance=part.chance)
        axes_of = entry_axes(part.spec, means)
        folded = dict(zip(_keys(part.cells, part), _keys(_fold(scored, part), part), strict=True))
        for (optimizer, variant), mine in means.groupby(ENTRY, sort=False):
            order = mine["point_key"].map(_index)
            mine = mine.assign(order=order).sort_values("order", kind="stable")
            frame = pd.DataFrame(list(mine["axes"]), index=mine.index)
            frame = frame.assign(acc=mine["acc"], diverged=mine["diverged"],
                                 at_chance=mine["at_chance"], point=mine["order"])  # fmt: skip
            entry = folded.get((optimizer, variant), (optimizer, variant))
            out[entry] = (axes_of[(optimizer, variant)], frame.reset_index(drop=True))
    return out


def _keys(cells: pd.DataFrame, part: ScoredStudy) -> list[Entry]:
    return list(zip(cells["optimizer"], cells["variant"], strict=True))


def _fold(scored: ScoredStudy, part: ScoredStudy) -> pd.DataFrame:
    """`part`'s cells with the workload folded into the variant, as `scored.cells` has them."""
    if not scored.workloads:
        return part.cells
    return scored.cells.loc[scored.cells["workload"] == part.name]


def _index(key: str) -> float:
    return float(key[1:]) if key.startswith("#") else math.nan


def is_grid(scored: ScoredStudy) -> bool:
    return (scored.spec.get("space") or {}).get("design", "grid") == "grid"


def ranked_pairs(scored: ScoredStudy, points: dict) -> list[tuple[str, str]]:
    """Every pair of axes some entry has both of, the most important first: by the mean over
    the entries of the two axes' summed importance (0 for an entry without the pair)."""
    names = list(dict.fromkeys(a.name for axes, _ in points.values() for a in axes))
    had = {frozenset(a.name for a in axes) for axes, _ in points.values()}
    pairs = [p for p in itertools.combinations(names, 2) if any(set(p) <= h for h in had)]
    scores = {p: pair_importance(scored, p, len(points)) for p in pairs}
    return sorted(pairs, key=lambda p: -scores[p])


def pair_importance(scored: ScoredStudy, pair: tuple[str, str], entries: int) -> float:
    """Mean over `entries` entries of the pair's summed importance (entries without it: 0)."""
    axes = scored.axes
    if axes.empty or not entries:
        return 0.0
    shares = axes[axes["axis"].isin(pair)].groupby(ENTRY, sort=False)["importance"]
    both = shares.agg(["sum", "size"])
    return float(both.loc[both["size"] == 2, "sum"].sum() / entries)


def plotted(values: pd.Series, axis: Axis) -> pd.Series:
    """What a figure draws for an axis's values: 1 - value on one_minus_log axes."""
    return 1 - values.astype(float) if axis.scale == "one_minus_log" else values


def axis_title(axis: Axis) -> str:
    return f"1 - {axis.name}" if axis.scale == "one_minus_log" else axis.name


def axis_type(axis: Axis) -> str:
    if axis.scale in ("log", "one_minus_log"):
        return "log"
    return "linear" if axis.numeric and axis.scale != "choices" else "category"


def _best(points: dict) -> float:
    accs = [frame["acc"].max() for _, frame in points.values()]
    return max((a for a in accs if a == a), default=math.nan)


def _layout(fig: go.Figure, best: float, rows: int, title: str) -> None:
    ticks = [0.0, SPAN / 2, SPAN]
    best_text = "-" if math.isnan(best) else f"{100 * best:.2f}%"
    fig.update_layout(
        coloraxis={
            "colorscale": heatmap_colorscale(), "cmin": 0.0, "cmax": AXIS_MAX,
            "colorbar": {
                "title": {"text": f"points below<br>the best point<br>({best_text})"},
                "tickvals": [*ticks, BELOW_Z],
                "ticktext": ["0 = best", *[f"{t:g}" for t in ticks[1:]], f"> {SPAN:g} below"],
            },
        },
        height=max(380, 380 * rows), plot_bgcolor=MISSING_COLOR, title_text=title,
    )  # fmt: skip


def _gap(acc: np.ndarray, best: float) -> tuple[np.ndarray, np.ndarray]:
    """Points below the best and the colour value (clipped into the grey band)."""
    gap = 100 * (best - acc)
    with np.errstate(invalid="ignore"):
        return gap, np.where(gap > SPAN, BELOW_Z, gap)


def pair_cells(frame: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """A grid entry's (y, x) cells: each the point with the best accuracy over the other axes."""
    ranked = frame.assign(_acc=frame["acc"].fillna(-math.inf))
    best = ranked.sort_values("_acc", ascending=False, kind="stable").groupby([y, x]).head(1)
    return best.drop(columns="_acc").set_index([y, x]).sort_index()


def pair_figure(scored: ScoredStudy, points: dict, x: str, y: str) -> go.Figure:
    """The (x, y) figure of the module docstring, one panel per entry with both axes."""
    looks = _look(scored.cells)
    mine = {e: v for e, v in points.items() if {x, y} <= {a.name for a in v[0]}}
    grid, best = is_grid(scored), _best(points)
    cols = min(HEATMAP_COLUMNS, max(1, len(mine)))
    rows = max(1, math.ceil(len(mine) / cols))
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.08,
                        subplot_titles=[looks[e]["name"] for e in mine],
                        vertical_spacing=min(0.3, 0.5 / rows) if rows > 1 else 0.1)  # fmt: skip
    for title, entry in zip(fig.layout.annotations, mine, strict=False):
        title.font = {"color": looks[entry]["color"], "size": 15}
    for k, (entry, (axes, frame)) in enumerate(mine.items()):
        row, col = k // cols + 1, k % cols + 1
        ax = {a.name: a for a in axes}
        if grid:
            _grid_panel(fig, pair_cells(frame, x, y), ax[x], ax[y], best, looks[entry], row, col)
        else:
            _scatter_panel(fig, frame, ax[x], ax[y], best, looks[entry], row, col)
    how = "best over the other axes" if grid else "every sampled point"
    _layout(fig, best, rows, f"Test accuracy over {x} x {y} ({how}), coloured by points below "
            f"the study's best point; grey: more than {SPAN:g} below; ✕: diverged")  # fmt: skip
    return fig


def _grid_panel(fig, cells, x: Axis, y: Axis, best, look, row, col) -> None:
    table = cells["acc"].unstack()
    acc = table.to_numpy(dtype=float)
    diverged = cells["diverged"].unstack().reindex_like(table).fillna(False).to_numpy(bool)
    at_chance = cells["at_chance"].unstack().reindex_like(table).fillna(False).to_numpy(bool)
    gap, z = _gap(acc, best)
    text = [[_cell_text(*c) for c in zip(*r, strict=True)]
            for r in zip(acc, diverged, at_chance, strict=True)]  # fmt: skip
    fig.add_trace(go.Heatmap(
        z=z, x=[format_hparam(v) for v in table.columns], y=[format_hparam(v) for v in table.index],
        text=text, customdata=gap, texttemplate="%{text}", coloraxis="coloraxis",
        name=look["name"], hovertemplate=f"{y.name} %{{y}}<br>{x.name} %{{x}}<br>%{{text}}<br>"
        "%{customdata:.2f} points below the best<extra>%{fullData.name}</extra>", xgap=1, ygap=1,
    ), row=row, col=col)  # fmt: skip
    for i, j in zip(*np.nonzero(diverged), strict=True):
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                      line=DIVERGED_OUTLINE, row=row, col=col)  # fmt: skip
    fig.update_xaxes(title_text=x.name, type="category", row=row, col=col)
    fig.update_yaxes(title_text=y.name, type="category", autorange="reversed", row=row, col=col)


def _scatter_panel(fig, frame, x: Axis, y: Axis, best, look, row, col) -> None:
    measured = frame[frame["acc"].notna()]
    gap, z = _gap(measured["acc"].to_numpy(float), best)
    fig.add_trace(go.Scatter(
        x=plotted(measured[x.name], x), y=plotted(measured[y.name], y), mode="markers",
        name=look["name"], showlegend=False, customdata=np.c_[100 * measured["acc"], gap],
        marker={"color": z, "coloraxis": "coloraxis", "size": 11,
                "symbol": np.where(measured["diverged"], "x", "circle"),
                "line": {"color": "#333333", "width": 0.5}},
        hovertemplate=f"{axis_title(x)} %{{x:.4g}}<br>{axis_title(y)} %{{y:.4g}}<br>"
        "%{customdata[0]:.2f}%, %{customdata[1]:.2f} points below the best"
        "<extra>%{fullData.name}</extra>",
    ), row=row, col=col)  # fmt: skip
    fig.update_xaxes(title_text=axis_title(x), type=axis_type(x), row=row, col=col)
    fig.update_yaxes(title_text=axis_title(y), type=axis_type(y), row=row, col=col)


def isolation_envelope(frame: pd.DataFrame, axis: Axis, grid: bool) -> pd.DataFrame:
    """Each stratum of `axis` (`analysis.axes.strata`): the value of its best point and its
    accuracy, in the axis's order."""
    measured = frame[frame["acc"].notna()]
    if measured.empty:
        return pd.DataFrame(columns=[axis.name, "acc"])
    best = measured.loc[measured.groupby(strata(measured, axis, grid))["acc"].idxmax()]
    return best[[axis.name, "acc"]].sort_values(axis.name) if axis.numeric else best


def isolation_figure(scored: ScoredStudy, points: dict) -> go.Figure:
    """One panel per axis (module docstring); entries in their colours."""
    looks, grid = _look(scored.cells), is_grid(scored)
    names = list(dict.fromkeys(a.name for axes, _ in points.values() for a in axes))
    cols = min(HEATMAP_COLUMNS, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[plot_text(n) for n in names],
                        vertical_spacing=min(0.3, 0.5 / rows) if rows > 1 else 0.1)  # fmt: skip
    for k, name in enumerate(names):
        row, col = k // cols + 1, k % cols + 1
        for entry, (axes, frame) in points.items():
            axis = next((a for a in axes if a.name == name), None)
            if axis is None:
                continue
            look, measured = looks[entry], frame[frame["acc"].notna()]
            line = isolation_envelope(frame, axis, grid)
            common = {"legendgroup": look["legendgroup"], "legendrank": look["legendrank"]}
            fig.add_trace(go.Scatter(
                x=plotted(measured[name], axis), y=100 * measured["acc"], mode="markers",
                name=look["name"], showlegend=False, opacity=0.45,
                marker={"color": look["color"], "size": 7,
                        "symbol": np.where(measured["diverged"], "x", "circle")}, **common,
            ), row=row, col=col)  # fmt: skip
            fig.add_trace(go.Scatter(
                x=plotted(line[name], axis), y=100 * line["acc"], mode="lines+markers",
                name=look["name"], showlegend=k == 0, line={"color": look["color"]},
                marker={"color": look["color"], "size": 8}, **common,
            ), row=row, col=col)  # fmt: skip
            fig.update_xaxes(title_text=axis_title(axis), type=axis_type(axis), row=row, col=col)
        fig.update_yaxes(title_text="test acc %", row=row, col=col)
    fig.update_layout(
        height=max(380, 340 * rows),
        title_text="Accuracy against each axis: every point (dots; x: diverged) and each "
        "stratum's best point, the other axes at their best (line)",
    )
    return fig


def best_so_far(frame: pd.DataFrame) -> pd.DataFrame:
    """k, best: the best accuracy among the first k measured points in sampling order."""
    acc = frame.sort_values("point", kind="stable")["acc"].dropna().to_numpy(float)
    return pd.DataFrame({"k": np.arange(1, len(acc) + 1), "best": np.maximum.accumulate(acc)})


def budget_figure(scored: ScoredStudy, points: dict) -> go.Figure:
    """E[best of k] with its bootstrap band per entry, and the best-so-far in sampling order."""
    looks, fig = _look(scored.cells), go.Figure()
    for entry, look in looks.items():
        curve = scored.budget[(scored.budget["optimizer"] == entry[0])
                              & (scored.budget["variant"] == entry[1])]  # fmt: skip
        if curve.empty:
            continue
        common = {"legendgroup": look["legendgroup"], "legendrank": look["legendrank"]}
        fig.add_trace(go.Scatter(
            x=[*curve["k"], *curve["k"][::-1]], y=[*100 * curve["high"], *100 * curve["low"][::-1]],
            fill="toself", fillcolor=look["color"], opacity=0.18, line={"width": 0},
            hoverinfo="skip", showlegend=False, name=look["name"], **common,
        ))  # fmt: skip
        fig.add_trace(go.Scatter(
            x=curve["k"], y=100 * curve["expected_best"], mode="lines+markers", name=look["name"],
            line={"color": look["color"]}, marker={"color": look["color"]}, **common,
        ))  # fmt: skip
        if not is_grid(scored) and entry in points:
            seen = best_so_far(points[entry][1])
            fig.add_trace(go.Scatter(
                x=seen["k"], y=100 * seen["best"], mode="lines", line={"color": look["color"],
                "dash": "dot", "shape": "hv"}, name=f"{look['name']}: best so far",
                showlegend=False, **common,
            ))  # fmt: skip
    fig.update_xaxes(title_text="points tried (budget k)", type="log")
    fig.update_yaxes(title_text="expected best test acc %")
    order = "; dotted: best so far in the design's sampling order" if not is_grid(scored) else ""
    fig.update_layout(height=420, title_text=f"E[best of k points drawn at random], with its "
                      f"{100 * scored.level:g}% bootstrap band over the points{order}")  # fmt: skip
    return fig
