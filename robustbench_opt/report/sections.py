"""The report's sections beyond the scores: the figures a study's layout calls for (lr x wd
heatmaps, or a search space's pairs, isolation plots and budget curves), the per-axis and budget
tables, the pair picker, and the cross-workload aggregate of a multi-workload study."""

from __future__ import annotations

import html
import json

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from robustbench_opt.analysis.display import axes_display, budget_display
from robustbench_opt.analysis.scores import MEASURES, counted_values, lr_wd_grid, point_keys
from robustbench_opt.analysis.study import ScoredStudy
from robustbench_opt.report.compare import profile_figure
from robustbench_opt.report.figures import accuracy_vs_lr, heatmaps, learning_curves
from robustbench_opt.report.html import PLOT_CONFIG, html_table
from robustbench_opt.report.space_figures import (
    PAIRS_SHOWN,
    budget_figure,
    isolation_figure,
    pair_figure,
    pair_importance,
    ranked_pairs,
    space_points,
)

Titled = tuple[str, go.Figure]


def pair_key(pair: tuple[str, str]) -> str:
    return f"{pair[0]}__{pair[1]}"


def report_figures(scored: ScoredStudy) -> dict[str, Titled]:
    """The report's figures by file-name-safe key, with their titles, in page order. An lr x wd
    grid keeps its heatmaps; a search space gets one figure per pair of axes (`pair-X__Y`, the
    most important pairs first), the isolation plots and E[best of k] with its band."""
    cells, epochs, metric, chance = scored.cells, scored.epochs, scored.metric, scored.chance
    if epochs is None:
        epochs = pd.DataFrame()
    if lr_wd_grid(cells):
        # `study_figures` less its E[best of k] without a band: the budget figure replaces it
        out = {
            "heatmaps": ("Heatmaps", heatmaps(cells, metric, chance)),
            "accuracy_vs_lr": (
                "Accuracy against learning rate",
                accuracy_vs_lr(cells, metric, chance),
            ),
            "learning_curves": ("Learning curves", learning_curves(cells, epochs, metric, chance)),
            "expected_best": ("Expected best against budget", budget_figure(scored, {})),
        }
        if scored.cross is not None:
            out["profiles"] = ("Performance profiles", cross_profile(scored))
        return out
    points = space_points(scored)
    out = {
        f"pair-{pair_key(p)}": (f"{p[0]} x {p[1]}", pair_figure(scored, points, *p))
        for p in ranked_pairs(scored, points)
    }
    out["isolation"] = ("Accuracy against each axis", isolation_figure(scored, points))
    out["learning_curves"] = ("Learning curves", learning_curves(
        best_points(cells, scored), epochs, metric, chance))  # fmt: skip
    out["expected_best"] = ("E[best of k] against budget", budget_figure(scored, points))
    if scored.cross is not None:
        out["profiles"] = ("Performance profiles", cross_profile(scored))
    return out


def best_points(cells: pd.DataFrame, scored: ScoredStudy) -> pd.DataFrame:
    """The trials of each entry's best point (by seed-mean accuracy), so that the learning
    curves draw that point."""
    acc = counted_values(cells, scored.metric, scored.chance)
    keyed = cells.assign(_key=point_keys(cells), _acc=acc)
    means = keyed.groupby(["optimizer", "variant", "_key"], sort=False)["_acc"].mean()
    best = means.dropna().groupby(level=[0, 1], sort=False).idxmax()
    chosen = set(best)
    keys = zip(keyed["optimizer"], keyed["variant"], keyed["_key"], strict=True)
    rows = [key in chosen for key in keys]
    return cells[rows]


def figure_div(key: str, fig: go.Figure) -> str:
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, config=PLOT_CONFIG,
                       div_id=f"fig-{key}")  # fmt: skip


def _json(value: object) -> str:
    """JSON safe inside a <script> element: no "<" can end it."""
    return value.replace("<", "\\u003c") if isinstance(value, str) else _json(json.dumps(value))


PICKER_JS = """
document.getElementById('pair-picker').addEventListener('change', function (event) {
  const figures = JSON.parse(document.getElementById('pair-figures').textContent);
  const chosen = JSON.parse(figures[event.target.value]);
  Plotly.react('fig-pair', chosen.data, chosen.layout, %s);
});
"""


def pair_picker(figures: dict[str, Titled], scored: ScoredStudy) -> str:
    """One pair figure (the most important pair) and a picker that redraws it with any other
    pair; every pair's figure travels inline as JSON, nothing is fetched."""
    pairs = {k: v for k, v in figures.items() if k.startswith("pair-")}
    if not pairs:
        return ""
    options = []
    for rank, (key, (title, _)) in enumerate(pairs.items()):
        x, y = key[len("pair-") :].split("__")
        share = pair_importance(scored, (x, y), scored.scores.shape[0])
        mark = ", among the most important" if rank < PAIRS_SHOWN else ""
        label = f"{title} (importance {100 * share:.0f}%{mark})"
        options.append(f'<option value="{html.escape(key)}">{html.escape(label)}</option>')
    first_key, (_, first) = next(iter(pairs.items()))
    data = {key: pio.to_json(fig) for key, (_, fig) in pairs.items()}
    return f"""<h2>Pairs of axes</h2>
<p><label for="pair-picker">Pair shown: </label><select id="pair-picker">{"".join(options)}
</select></p>
<p class="note">Pairs listed by the summed mean importance of their two axes, the most important
first. Pick any other pair; the figure redraws in the page.</p>
{figure_div("pair", first)}
<script type="application/json" id="pair-figures">{_json(data)}</script>
<script type="text/javascript">{PICKER_JS % json.dumps(PLOT_CONFIG)}</script>"""


def axes_tables(scored: ScoredStudy) -> str:
    """The per-axis table (sensitivity, importance, best value, edge), its method, the edge
    warnings and the E[best of k] table."""
    several = scored.scores["variant"].nunique() > 1
    parts = []
    if not scored.axes.empty:
        parts += [
            "<h2>What each axis costs</h2>",
            f'<div class="fits">{html_table(axes_display(scored.axes, several))}</div>',
            '<p class="note">sensitivity: mean accuracy lost to a non-best value of the axis, '
            "the other axes at their best; importance: share of variance, "
            f"{html.escape(scored.importance_method)}</p>",
            *(f'<p class="warning">warning: {html.escape(w)}</p>' for w in scored.edge_warnings),
        ]
    if not scored.budget.empty:
        parts += [
            "<h2>E[best of k]</h2>",
            f'<div class="fits">{html_table(budget_display(scored.budget, several))}</div>',
            f'<p class="note">k points tried at random; [a, b]: {100 * scored.level:g}% '
            "bootstrap band over the points.</p>",
        ]
    return "\n".join(parts)


def cross_profile(scored: ScoredStudy) -> go.Figure:
    return profile_figure(scored.cross.profiles, scored.cross.measure, over="workloads")


def cross_section(scored: ScoredStudy) -> str:
    """Ranks per workload with Kendall's W, the transfer table and the plain-words verdict (the
    performance profile is a figure of its own)."""
    cross = scored.cross
    if cross is None:
        return ""
    label = MEASURES[cross.measure].label
    ranks = cross.ranks.map(lambda r: f"{r:g}").rename_axis("optimizer").reset_index()
    transfer = pd.DataFrame({
        "optimizer": cross.transfer["optimizer"],
        "one point for all": cross.transfer["point"].fillna("- (no shared point)"),
        "its mean %": cross.transfer["mean_acc"].map(_pct),
        "lost vs own best (pts)": cross.transfer["loss"].map(_pct),
    })  # fmt: skip
    verdict = "".join(f"<p>{html.escape(line)}</p>" for line in cross.verdict)
    return f"""<section id="cross"><h2>Across workloads</h2>{verdict}
<h3>Rank per workload by {html.escape(label)} (1 = best)</h3>
<div class="fits">{html_table(ranks)}</div>
<p class="note">Kendall's W = {cross.kendall_w:.2f} (1: every workload ranks alike; 0: no
agreement).</p>
<h3>Transfer: one hyperparameter point for every workload</h3>
<div class="fits">{html_table(transfer)}</div>
<p class="note">Each optimizer's point with the best mean accuracy over the workloads, and the
accuracy it loses, on average, against each workload's own best point.</p></section>"""


def _pct(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}"
