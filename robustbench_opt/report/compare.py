"""One self-contained HTML page comparing several studies on one robustness measure."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs

from robustbench_opt.analysis.compare import side_by_side_text
from robustbench_opt.analysis.display import MEASURE_UNITS
from robustbench_opt.analysis.scores import MEASURES
from robustbench_opt.report.html import CSP, PLOT_CONFIG, STYLE, html_table


def profile_figure(profiles: pd.DataFrame, measure: str, over: str = "studies") -> go.Figure:
    """Performance profiles as AlgoPerf draws them: step lines of the share of `over` (studies
    or workloads) on which the optimizer is within tau x the best."""
    taus = [float(c.split()[1]) for c in profiles.columns]
    fig = go.Figure()
    for name, row in profiles.iterrows():
        fig.add_trace(
            go.Scatter(
                x=taus,
                y=100 * row.to_numpy(float),
                mode="lines+markers",
                line={"shape": "hv"},
                name=html.escape(str(name)),
            )  # fmt: skip
        )
    fig.update_xaxes(title_text="tau (ratio to the best)", type="log")
    fig.update_yaxes(title_text=f"{over} within tau x the best (%)", range=[-5, 105])
    fig.update_layout(title_text=f"Performance profiles on {MEASURES[measure].label}", height=420)
    return fig


def render_comparison(
    long: pd.DataFrame, profiles: pd.DataFrame | None, measure: str, level: float
) -> str:
    """The comparison page: the measure per optimizer and study, then the profiles."""
    info = MEASURES[measure]
    table = html_table(side_by_side_text(long, measure).reset_index())
    if profiles is None:
        figure = "<p>No optimizer is in two of these studies: no performance profiles.</p>"
    else:
        figure = pio.to_html(
            profile_figure(profiles, measure),
            full_html=False,
            include_plotlyjs=False,
            config=PLOT_CONFIG,
            div_id="fig-profiles",
        )
    studies = ", ".join(html.escape(s) for s in dict.fromkeys(long["study"]))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>robustbench-opt: compare {studies}</title><style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
<h1>Comparing {studies}</h1>
<h2>{html.escape(info.label)} ({MEASURE_UNITS[info.unit]}, {info.better} is better)</h2>
<div style="overflow-x: auto">{table}</div>
<p class="note">[a, b]: {100 * level:g}% bootstrap interval. {html.escape(info.formula)}.</p>
<h2>Performance profiles</h2>
{figure}
<p class="note">A profile's value at tau is the share of the studies in which the optimizer's
{html.escape(info.label)} is within a factor tau of that study's best (Dahl et al. 2023).</p>
</body></html>
"""
