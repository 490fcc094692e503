"""HTML reports and figures of a study: the only place that imports plotly."""

from __future__ import annotations

from robustbench_opt.report.figures import study_figures
from robustbench_opt.report.html import render_report
from robustbench_opt.report.png import write_pngs

__all__ = ["render_report", "study_figures", "write_pngs"]
