"""One self-contained HTML report per study: plotly.js inline, no request leaves the page."""

from __future__ import annotations

import html
from datetime import datetime, timezone

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from robustbench_opt.analysis.display import scores_display, scores_notes
from robustbench_opt.analysis.study import ScoredStudy
from robustbench_opt.analysis.verdict import verdict_lines
from robustbench_opt.report.figures import study_figures
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
"""
# Nothing may load from anywhere: scripts and styles are inline, images are data:/blob: only.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:"
)
PLOT_CONFIG = {"responsive": True, "displaylogo": False}


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
    shown = scores_display(scores, ci)
    verdict = "".join(
        f"<p>{html.escape(line)}</p>"
        for line in verdict_lines(scores, boots, ci, level=scored.level)
    )
    figures = study_figures(cells, scored.epochs, metric, chance)
    divs = "\n".join(
        f"<h2>{html.escape(title)}</h2>\n"
        + pio.to_html(
            fig, full_html=False, include_plotlyjs=False, config=PLOT_CONFIG, div_id=f"fig-{key}"
        )  # fmt: skip
        for key, (title, fig) in {
            "heatmaps": ("Heatmaps", figures["heatmaps"]),
            "accuracy_vs_lr": ("Accuracy against learning rate", figures["accuracy_vs_lr"]),
            "learning_curves": ("Learning curves", figures["learning_curves"]),
            "expected_best": ("Expected best against budget", figures["expected_best"]),
        }.items()
    )
    notes = "".join(
        f'<p class="note">{html.escape(n)}</p>'
        for n in scores_notes(metric, chance, _over(ci), scored.level, scored.resamples)
    )
    name = html.escape(study)
    refresh = (
        f'<meta http-equiv="refresh" content="{int(refresh_seconds)}">' if refresh_seconds else ""
    )
    nav = f'<p><a href="{html.escape(back)}">&larr; all studies</a></p>' if back else ""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
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
<div class="fits">{html_table(scores_display(scores, ci, wide=True))}</div></details>
{notes}
{divs}
</body></html>
"""
