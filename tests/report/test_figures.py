"""The report's figures, checked on the plotly figure data: one colour and one legend order per
optimizer across figures, heatmap colours by distance to the best cell, divergence marks, and
learning-curve legends that name the best cell."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from plotly.colors import sequential

from robustbench_opt.report import study_figures
from robustbench_opt.report.figures import (
    AXIS_MAX,
    BELOW_COLOR,
    BELOW_Z,
    DIVERGED_MARK,
    PALETTE,
    entry_colors,
)

CHANCE = 0.1
# (optimizer, lr, wd, seed, state, final accuracy); listed in a non-alphabetical study order
TRIALS = [
    ("sgd", 0.1, 0.0, 0, "done", 0.99),  # the study's best cell
    ("sgd", 0.1, 0.01, 0, "done", 0.95),  # 4 points below
    ("sgd", 0.01, 0.0, 0, "done", 0.90),  # 9 below: still on the scale
    ("sgd", 0.01, 0.01, 0, "done", 0.85),  # 14 below: the "below" colour
    ("adam", 0.1, 0.0, 0, "diverged", math.nan),  # counted at chance
    ("adam", 0.1, 0.01, 0, "diverged", 0.40),  # counted at its measured accuracy
    ("adam", 0.01, 0.0, 0, "done", 0.97),
    ("adam", 0.01, 0.01, 0, "failed", math.nan),  # missing
    ("momentum", 0.1, 0.0, 0, "done", 0.98),
    ("momentum", 0.1, 0.01, 0, "pending", math.nan),  # missing
    ("momentum", 0.01, 0.0, 0, "done", 0.96),
    ("momentum", 0.01, 0.01, 0, "done", 0.92),
    ("momentum", 0.01, 0.01, 1, "done", 0.94),  # two seeds: mean 0.93
]
ORDER = ["sgd", "adam", "momentum"]


def study_cells() -> pd.DataFrame:
    rows = [
        {
            "cell_id": f"c{k}",
            "optimizer": o,
            "variant": "default",
            "lr": lr,
            "weight_decay": wd,
            "seed": seed,
            "state": state,
            "final_test_acc": acc,
            "best_test_acc": acc,
            "test_acc_at_best_val": math.nan,
        }
        for k, (o, lr, wd, seed, state, acc) in enumerate(TRIALS)
    ]
    return pd.DataFrame(rows)


def study_epochs(cells: pd.DataFrame) -> pd.DataFrame:
    """Three epochs per trial with a result, written last entry first (not the study's order)."""
    measured = cells[cells["final_test_acc"].notna()].iloc[::-1]
    return pd.DataFrame(
        [
            {
                "cell_id": row.cell_id,
                "epoch": e,
                "train_loss": 1.0 / e,
                "test_loss": 1.1 / e,
                "train_acc": row.final_test_acc - 0.01 * (3 - e),
                "test_acc": row.final_test_acc - 0.02 * (3 - e),
            }
            for row in measured.itertuples()
            for e in (1, 2, 3)
        ]
    )


@pytest.fixture(scope="module")
def figures():
    cells = study_cells()
    return study_figures(cells, study_epochs(cells), "final", CHANCE)


def _trace_color(trace) -> str | None:
    line = getattr(trace, "line", None)
    return line.color if line is not None and line.color else None


def legend_order(fig) -> list[str]:
    """Legend entries as plotly lists them: by legendrank, then trace order."""
    shown = [
        (t.legendrank if t.legendrank is not None else 1000, k, t.legendgroup)
        for k, t in enumerate(fig.data)
        if t.type == "scatter" and t.showlegend is not False
    ]
    return [group for _, _, group in sorted(shown)]


def test_each_optimizer_has_one_colour_in_every_figure_and_the_study_order(figures):
    expected = entry_colors(study_cells())
    assert list(expected) == [(o, "default") for o in ORDER]
    assert list(expected.values()) == PALETTE[:3]  # assigned in the study's order
    seen: dict[str, set[str]] = {name: set() for name in ORDER}
    for key, fig in figures.items():
        for trace in fig.data:
            if _trace_color(trace):
                seen[trace.legendgroup].add(_trace_color(trace))
                assert trace.marker.color == trace.line.color, key
        if key != "heatmaps":
            assert legend_order(fig) == ORDER, key
    titles = {a.text: a.font.color for a in figures["heatmaps"].layout.annotations}
    for name in ORDER:
        seen[name].add(titles[name])  # heatmap titles wear the entry's colour too
    assert seen == {name: {expected[(name, "default")]} for name in ORDER}
    assert [t.name for t in figures["heatmaps"].data] == ORDER
    # every line figure draws every entry
    assert {t.legendgroup for t in figures["accuracy_vs_lr"].data} == set(ORDER)
    assert {t.legendgroup for t in figures["expected_best"].data} == set(ORDER)


def heatmap_of(figures, name: str):
    return next(t for t in figures["heatmaps"].data if t.name == name)


def test_heatmap_colour_is_points_below_the_study_best_clipped_with_a_below_colour(figures):
    # rows: lr ascending (1e-2, 1e-1); columns: wd ascending (0, 1e-2)
    sgd = np.asarray(heatmap_of(figures, "sgd").z, dtype=float)
    np.testing.assert_allclose(sgd, [[9.0, BELOW_Z], [0.0, 4.0]], atol=1e-9)
    adam = np.asarray(heatmap_of(figures, "adam").z, dtype=float)
    np.testing.assert_allclose(adam, [[2.0, np.nan], [BELOW_Z, BELOW_Z]], atol=1e-9)
    momentum = np.asarray(heatmap_of(figures, "momentum").z, dtype=float)
    np.testing.assert_allclose(momentum, [[3.0, 6.0], [1.0, np.nan]], atol=1e-9)
    axis = figures["heatmaps"].layout.coloraxis
    assert (axis.cmin, axis.cmax) == (0.0, AXIS_MAX)
    stops = [float(stop) for stop, _ in axis.colorscale]
    colors = [color.lower() for _, color in axis.colorscale]
    cut = colors.index(BELOW_COLOR)  # Viridis up to 10 points below, then the "below" band
    assert colors[:cut] == [c.lower() for c in sequential.Viridis[::-1]]  # yellow = the best
    assert stops[cut - 1] == stops[cut] == pytest.approx(10 / AXIS_MAX)
    assert colors[cut:] == [BELOW_COLOR] * 2 and stops[-1] == 1.0
    assert 10 < BELOW_Z < AXIS_MAX
    bar = axis.colorbar
    assert bar.ticktext[0] == "0 = best" and bar.ticktext[-1] == "> 10 below"
    assert list(bar.tickvals)[-1] == BELOW_Z and "99.00%" in bar.title.text


def test_heatmap_writes_accuracy_and_marks_diverged_chance_and_missing_cells(figures):
    def text(name: str) -> list[list[str]]:
        return [list(row) for row in heatmap_of(figures, name).text]

    assert text("sgd") == [["90.00", "85.00"], ["99.00", "95.00"]]
    assert text("adam") == [
        ["97.00", "missing"],
        [f"10.00<br>{DIVERGED_MARK}, chance", f"40.00<br>{DIVERGED_MARK}"],
    ]
    assert text("momentum") == [["96.00", "93.00"], ["98.00", "missing"]]
    # diverged cells are outlined on adam's subplot (the second one): lr 1e-1 row, both columns
    shapes = figures["heatmaps"].layout.shapes
    assert [(s.xref, s.yref, s.x0, s.y0) for s in shapes] == [
        ("x2", "y2", -0.5, 0.5),
        ("x2", "y2", 0.5, 0.5),
    ]
    # accuracy against lr: an x where a cell at that lr diverged
    adam = next(t for t in figures["accuracy_vs_lr"].data if t.legendgroup == "adam")
    assert list(adam.marker.symbol) == ["circle", "x"]


def test_learning_curve_legends_name_each_best_cells_lr_and_wd(figures):
    curves = figures["learning_curves"]
    names = [t.name for t in curves.data if t.showlegend is not False]
    assert names == ["sgd (lr 1e-1, wd 0)", "adam (lr 1e-2, wd 0)", "momentum (lr 1e-1, wd 0)"]
    assert len(curves.data) == 12  # four panels per entry
    momentum_test = [t for t in curves.data if t.legendgroup == "momentum"][3]
    np.testing.assert_allclose(momentum_test.y, [94.0, 96.0, 98.0])
