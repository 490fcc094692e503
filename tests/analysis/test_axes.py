"""What each axis costs: sensitivity, importance (grid and sampled), edge warnings, E[best of k]."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from robustbench_opt.analysis.axes import (
    axis_figures,
    expected_best_band,
    grid_importance,
    sampled_importance,
    sensitivity,
)
from robustbench_opt.analysis.scores import expected_best
from robustbench_opt.space import Axis, design_points

LR = Axis("lr", "log", low=1e-4, high=1e-1, num=4)
BETA = Axis("beta1", "one_minus_log", low=0.5, high=0.99, num=4)
BATCH = Axis("batch_size", "choices", values=(32, 64, 128))


def frame(points, acc) -> pd.DataFrame:
    rows = [{**p.values, "acc": acc(p.values)} for p in points]
    return pd.DataFrame(rows)


def lr_only(values: dict) -> float:
    """Accuracy that depends on the learning rate only: peaked at lr = 1e-2."""
    return 0.9 - 0.1 * abs(np.log10(values["lr"]) + 2)


def test_on_a_grid_an_axis_the_accuracy_ignores_gets_no_variance_and_no_sensitivity() -> None:
    axes = [LR, BETA, BATCH]
    points = frame(design_points(axes, "grid"), lr_only)
    shares = grid_importance(points, axes)
    assert shares["lr"] == pytest.approx(1.0) and shares["lr"] > 0.9
    assert shares["beta1"] == pytest.approx(0.0, abs=1e-12)
    assert sensitivity(points, BETA, grid=True) == 0.0
    # lr values 1e-4, 1e-3, 1e-2, 1e-1: losses 0.2, 0.1, 0 (best), 0.1 -> mean 0.4 / 3
    assert sensitivity(points, LR, grid=True) == pytest.approx(0.4 / 3)


def test_on_a_sobol_design_the_sampled_importance_finds_the_one_axis_that_matters() -> None:
    axes = [LR, BETA, BATCH]
    points = frame(design_points(axes, "sobol", 64, seed=0), lr_only)
    shares = sampled_importance(points, axes)
    assert shares["lr"] > 0.9, shares
    assert sum(shares.values()) == pytest.approx(1.0)


def test_the_edge_warning_fires_when_the_best_point_is_at_the_end_of_a_range() -> None:
    axes = [LR, BETA]
    rising = frame(design_points(axes, "grid"), lambda v: 0.5 + v["lr"])  # best at lr 0.1
    figures = {f.axis: f for f in axis_figures(rising, axes, grid=True)}
    assert figures["lr"].at_edge == "high" and figures["lr"].best_value == pytest.approx(0.1)
    centred = frame(design_points(axes, "grid"), lr_only)  # best at 1e-2: inside
    assert {f.axis: f.at_edge for f in axis_figures(centred, axes, grid=True)}["lr"] is None
    sampled = frame(design_points(axes, "sobol", 32, seed=1), lambda v: 0.5 - v["lr"])
    assert {f.axis: f.at_edge for f in axis_figures(sampled, axes, grid=False)}["lr"] == "low"


def test_expected_best_of_k_has_the_exact_curve_inside_its_bootstrap_band() -> None:
    acc = np.array([0.1, 0.5, 0.6, 0.9])
    band = expected_best_band(acc, resamples=400, seed=3)
    assert list(band["k"]) == [1, 2, 3, 4]
    assert band["expected_best"].tolist() == pytest.approx(expected_best(acc).tolist())
    assert band["expected_best"].iloc[0] == pytest.approx(acc.mean())
    assert band["expected_best"].iloc[-1] == pytest.approx(0.9)
    assert (band["low"] <= band["expected_best"] + 1e-12).all()
    assert (band["expected_best"] <= band["high"] + 1e-12).all()
    assert band.equals(expected_best_band(acc, resamples=400, seed=3))  # seeded
