"""One self-contained HTML report per study: plotly.js inline, no request leaves the page."""

from __future__ import annotations

import html
from datetime import UTC, datetime

import pandas as pd
from plotly.offline import get_plotlyjs

from robustbench_opt.analysis.display import scores_display, scores_notes
from robustbench_opt.analysis.scores import lr_wd_grid
from robustbench_opt.analysis.study import ScoredStudy
from robustbench_opt.analysis.verdict import verdict_lines
from robustbench_opt.states import STATES

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
.fits { overflow-x: auto; max-width: 100%; }
#verdict { background: #f5f7fb; border-left: 4px solid #4c6ef5; padding: 0.3em 1em; }
#verdict p { margin: 0.4em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, td:nth-child(2), th:first-child, th:nth-child(2) { text-align: left; }
.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
.warning { color: #8a4b00; font-size: 0.9em; margin: 0.2em 0; }
#cross { background: #f7f7f2; border-left: 4px solid #868e96; padding: 0.3em 1em; }
"""
# Nothing may load from anywhere: scripts and styles are inline, images are data:/blob: only.
PLOT_CONFIG = {"responsive": True, "displaylogo": False}
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:"
)


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _over(ci: pd.DataFrame) -> str:
    """What the intervals resample, e.g. "grid cells" (several kinds when entries differ)."""
    return " / ".join(dict.fromkeys(ci["over"])) if len(ci) else ""


def _progress(cells: pd.DataFrame) -> str:
    counts = cells["state"].value_counts()
    parts = [f"{counts.get(s, 0)} {s}" for s in STATES]
    return f"{len(cells)} trials: " + ", ".join(parts)


def render_report(
    scored: ScoredStudy, *, refresh_seconds: int | None = None, back: str | None = None
) -> str:
    """The report page of a study scored with its epochs (`score_study(..., epochs=True)`) as
    one string. For `serve`: `refresh_seconds` adds an auto-reload and `back` a link to the
    study list at that URL."""
    if scored.epochs is None:
        raise ValueError("render_report needs the study's epochs: score_study(..., epochs=True)")
    study, cells, metric, chance = scored.name, scored.cells, scored.metric, scored.chance
    scores, boots, ci = scored.scores, scored.boots, scored.intervals
    space = not lr_wd_grid(cells)
    shown = scores_display(scores, ci, space=space)
    verdict = "".join(
        f"<p>{html.escape(line)}</p>"
        for line in verdict_lines(scores, boots, ci, level=scored.level)
    )
    from robustbench_opt.report.sections import (
        axes_tables,
        cross_section,
        figure_div,
        pair_picker,
        report_figures,
    )  # fmt: skip

    figures = report_figures(scored)
    divs = pair_picker(figures, scored) + "\n".join(
        f"<h2>{html.escape(title)}</h2>\n{figure_div(key, fig)}"
        for key, (title, fig) in figures.items()
        if not key.startswith("pair-") and key != "profiles"
    )
    # A space's figures read off its per-axis table; an lr x wd grid keeps its heatmaps first.
    tables_first, tables_last = (axes_tables(scored), "") if space else ("", axes_tables(scored))
    cross = cross_section(scored)
    if scored.cross is not None:
        cross += figure_div("profiles", figures["profiles"][1])
    notes = "".join(
        f'<p class="note">{html.escape(n)}</p>'
        for n in scores_notes(metric, chance, _over(ci), scored.level, scored.resamples, space)
    )
    name = html.escape(study)
    refresh = (
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">' if refresh_seconds else ""
    )
    nav = f'<p><a href="{html.escape(back)}">&larr; all studies</a></p>' if back else ""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>robustbench-opt: {name}</title><style>{STYLE}</style>
<script type="text/javascript">{get_plotlyjs()}</script>
</head><body>
{nav}<h1>Study {name}</h1>
<p class="note">{html.escape(_progress(cells))}; generated {stamp}</p>
<section id="verdict"><h2>Verdict</h2>{verdict}</section>
<h2>Robustness scores</h2>
<div class="fits">{html_table(shown)}</div>
<details><summary>Every measure</summary>
<div class="fits">{html_table(scores_display(scores, ci, wide=True, space=space))}</div>
</details>
{notes}
{cross}
{tables_first}
{divs}
{tables_last}
</body></html>
"""
