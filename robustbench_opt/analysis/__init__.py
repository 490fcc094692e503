"""Robustness analysis: pure functions on result frames (no torch, Ray or plotly)."""

from __future__ import annotations

from robustbench_opt.analysis.results import load_results, results_frame
from robustbench_opt.analysis.results_csv import paper_table_path, read_results_csv
from robustbench_opt.analysis.scores import (
    MEASURES,
    cell_means,
    chance_accuracy,
    compute_scores,
    expected_best,
    expected_best_curves,
    lr_sensitivity_per_wd,
)
from robustbench_opt.analysis.study import ScoredStudy, StudyCells, load_study, score_study
from robustbench_opt.analysis.tables import (
    lr_optimizer_table,
    lr_wd_table,
    table_rows,
    variant_optimizer_table,
)
from robustbench_opt.analysis.uncertainty import bootstrap, compare_pair, intervals
from robustbench_opt.analysis.verdict import verdict_lines

__all__ = [
    "MEASURES",
    "ScoredStudy",
    "StudyCells",
    "bootstrap",
    "cell_means",
    "chance_accuracy",
    "compare_pair",
    "compute_scores",
    "intervals",
    "lr_sensitivity_per_wd",
    "verdict_lines",
    "expected_best",
    "expected_best_curves",
    "load_results",
    "load_study",
    "lr_optimizer_table",
    "lr_wd_table",
    "paper_table_path",
    "read_results_csv",
    "results_frame",
    "score_study",
    "table_rows",
    "variant_optimizer_table",
]
