"""Robustness scores against values worked out by hand, and expected-best against brute force."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from robustbench_opt.analysis.scores import (
    cell_means,
    chance_accuracy,
    compute_scores,
    expected_best,
    expected_best_curves,
    require_measured,
)
from robustbench_opt.datasets import REGISTRY
from robustbench_opt.errors import UserError

CHANCE = 0.1  # ten classes


def trial(optimizer, lr, wd, acc, state="done", seed=0, variant="default", best=None, val=None):
    return {
        "optimizer": optimizer,
        "variant": variant,
        "lr": lr,
        "weight_decay": wd,
        "seed": seed,
        "state": state,
        "final_test_acc": acc,
        "best_test_acc": acc if best is None else best,
        "test_acc_at_best_val": math.nan if val is None else val,
    }


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def row_of(scores: pd.DataFrame, optimizer: str, variant: str = "default") -> pd.Series:
    hit = scores[(scores["optimizer"] == optimizer) & (scores["variant"] == variant)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_scores_of_a_2x2_grid_match_hand_computation():
    cells = frame(
        trial("a", 0.1, 0.0, 0.90),
        trial("a", 0.1, 0.1, 0.80),
        trial("a", 0.01, 0.0, 0.70),
        trial("a", 0.01, 0.1, 0.895),
    )
    s = row_of(compute_scores(cells, chance=CHANCE), "a")
    values = np.array([0.90, 0.80, 0.70, 0.895])
    assert s["cells"] == 4 and s["missing"] == 0
    assert s["mean"] == pytest.approx(0.82375, abs=1e-12)
    # population variance: mean of squared deviations, by hand
    assert s["variance"] == pytest.approx(((values - 0.82375) ** 2).sum() / 4, abs=1e-15)
    assert s["variance"] == pytest.approx(0.0066921875, abs=1e-15)
    assert s["std"] == pytest.approx(math.sqrt(0.0066921875), abs=1e-12)
    assert (s["min"], s["max"]) == (0.70, 0.90)
    assert s["range"] == pytest.approx(0.20, abs=1e-12)
    assert (s["best_lr"], s["best_wd"]) == (0.1, 0.0)
    assert s["regret"] == pytest.approx(0.90 - 0.82375, abs=1e-12)
    assert s["near_best_share"] == pytest.approx(0.5)  # 0.90 and 0.895 are within 0.01
    assert math.isnan(s["seed_std"])
    assert (s["diverged"], s["failed"], s["pending"]) == (0, 0, 0)


def test_tied_best_cells_pick_the_smaller_lr_then_wd_and_all_count_as_near_best():
    cells = frame(
        trial("a", 0.1, 0.01, 0.9),
        trial("a", 0.01, 0.1, 0.9),
        trial("a", 0.01, 0.01, 0.9),
        trial("a", 0.1, 0.1, 0.5),
    )
    s = row_of(compute_scores(cells, chance=CHANCE), "a")
    assert (s["best_lr"], s["best_wd"]) == (0.01, 0.01)
    assert s["near_best_share"] == pytest.approx(0.75)
    assert s["mean"] == pytest.approx(0.8)


def test_single_cell_grid_has_zero_spread():
    s = row_of(compute_scores(frame(trial("a", 0.1, 0.0, 0.42)), chance=CHANCE), "a")
    assert s["cells"] == 1
    assert (s["mean"], s["variance"], s["std"], s["range"], s["regret"]) == (0.42, 0, 0, 0, 0)
    assert s["near_best_share"] == 1.0


def test_diverged_cells_count_with_their_measured_accuracy():
    cells = frame(
        trial("a", 0.1, 0.0, 0.10, state="diverged"),
        trial("a", 0.01, 0.0, 0.11, state="diverged"),
    )
    s = row_of(compute_scores(cells, chance=CHANCE), "a")
    assert s["cells"] == 2 and s["diverged"] == 2
    assert s["mean"] == pytest.approx(0.105)
    assert s["variance"] == pytest.approx(0.005**2)


def test_missing_failed_and_pending_cells_are_counted_not_scored():
    cells = frame(
        trial("a", 0.1, 0.0, 0.9),
        trial("a", 0.01, 0.0, math.nan, state="failed"),
        trial("a", 0.001, 0.0, math.nan, state="pending"),
        trial("a", 0.001, 0.1, math.nan, state="running"),
        trial("b", 0.1, 0.0, math.nan, state="pending"),
    )
    scores = compute_scores(cells, chance=CHANCE)
    a = row_of(scores, "a")
    assert (a["cells"], a["missing"], a["failed"], a["pending"], a["running"]) == (1, 3, 1, 1, 1)
    assert a["mean"] == 0.9
    b = row_of(scores, "b")
    assert (b["cells"], b["missing"], b["pending"]) == (0, 1, 1)
    assert math.isnan(b["mean"]) and math.isnan(b["best_lr"])
    assert list(scores["optimizer"]) == ["a", "b"]  # the study's order


def test_seeds_are_averaged_within_a_cell_before_the_grid_statistics():
    cells = frame(
        trial("a", 0.1, 0.0, 0.80, seed=0),
        trial("a", 0.1, 0.0, 0.90, seed=1),
        trial("a", 0.1, 0.0, 0.70, seed=2),
        trial("a", 0.01, 0.0, 0.60, seed=0),
        trial("a", 0.01, 0.0, 0.62, seed=1),
        trial("a", 0.01, 0.0, math.nan, seed=2, state="failed"),
    )
    s = row_of(compute_scores(cells, chance=CHANCE), "a")
    assert s["cells"] == 2 and s["seeds"] == 3
    assert s["mean"] == pytest.approx((0.80 + 0.61) / 2)
    assert s["variance"] == pytest.approx(((0.80 - 0.705) ** 2 + (0.61 - 0.705) ** 2) / 2)
    # seed std (ddof=1) per cell: 0.1 and 0.0141421..., then their mean
    assert s["seed_std"] == pytest.approx((0.1 + math.sqrt(0.0002)) / 2, abs=1e-12)
    assert s["failed"] == 1


def test_metrics_read_their_own_column():
    cells = frame(
        trial("a", 0.1, 0.0, 0.5, best=0.7, val=0.6),
        trial("a", 0.01, 0.0, 0.3, best=0.9, val=0.8),
    )
    assert row_of(compute_scores(cells, "final", chance=CHANCE), "a")["max"] == 0.5
    assert row_of(compute_scores(cells, "best", chance=CHANCE), "a")["max"] == 0.9
    assert row_of(compute_scores(cells, "val", chance=CHANCE), "a")["mean"] == pytest.approx(0.7)
    with pytest.raises(UserError, match="unknown metric 'bets'; did you mean 'best'"):
        compute_scores(cells, "bets", chance=CHANCE)


def test_variants_are_scored_separately():
    cells = frame(
        trial("a", 0.1, 0.0, 0.5, variant="base"),
        trial("a", 0.1, 0.0, 0.7, variant="cutmix"),
    )
    scores = compute_scores(cells, chance=CHANCE)
    assert row_of(scores, "a", "base")["mean"] == 0.5
    assert row_of(scores, "a", "cutmix")["mean"] == 0.7


def brute_force(values: list[float], n: int) -> float:
    subsets = list(itertools.combinations(values, n))
    return sum(max(s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    "values",
    [
        [0.5, 0.7, 0.7, 0.9, 0.2, 0.9, 0.7],  # ties at the top and in the middle
        [0.3, 0.3, 0.3, 0.3],  # all tied
        [0.91],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97],
    ],
)
def test_expected_best_equals_enumeration_of_all_subsets(values):
    curve = expected_best(values)
    expected = [brute_force(values, n) for n in range(1, len(values) + 1)]
    np.testing.assert_allclose(curve, expected, rtol=0, atol=1e-13)


def test_expected_best_is_mean_at_one_and_max_at_all_and_monotone_for_large_grids():
    rng = np.random.default_rng(0)
    values = rng.uniform(0.8, 0.97, size=3000)
    curve = expected_best(values)
    assert curve[0] == pytest.approx(values.mean(), abs=1e-10)  # gammaln rounding at N=3000
    assert curve[-1] == values.max()
    assert np.all(np.diff(curve) >= -1e-12)


def test_expected_best_curves_per_optimizer_use_seed_means():
    cells = frame(
        trial("a", 0.1, 0.0, 0.8, seed=0),
        trial("a", 0.1, 0.0, 0.6, seed=1),
        trial("a", 0.01, 0.0, 0.9),
        trial("b", 0.1, 0.0, 0.5),
    )
    curves = expected_best_curves(cells, chance=CHANCE)
    a = curves[curves["optimizer"] == "a"]
    assert list(a["n"]) == [1, 2]
    np.testing.assert_allclose(a["expected_best"], [0.8, 0.9], atol=1e-13)
    assert list(curves[curves["optimizer"] == "b"]["expected_best"]) == [0.5]


def test_cell_means_flag_a_cell_diverged_when_any_seed_diverged():
    cells = frame(
        trial("a", 0.1, 0.0, 0.1, state="diverged", seed=0),
        trial("a", 0.1, 0.0, 0.9, seed=1),
    )
    means = cell_means(cells, chance=CHANCE)
    assert bool(means["diverged"].iloc[0]) and means["acc"].iloc[0] == pytest.approx(0.5)


def test_nothing_to_score_is_a_one_line_error():
    with pytest.raises(UserError, match="has no cells yet"):
        require_measured(frame(trial("a", 0.1, 0, 0.5)).iloc[:0], "s", "final")
    pending = frame(trial("a", 0.1, 0, math.nan, state="pending"))
    with pytest.raises(UserError, match=r"no finished cells yet \(1 pending\)"):
        require_measured(pending, "s", "final")
    with pytest.raises(UserError, match="no validation results"):
        require_measured(frame(trial("a", 0.1, 0, 0.5)), "s", "val")


def test_chance_accuracy_comes_from_the_imported_classes_or_the_dataset_registry(monkeypatch):
    monkeypatch.setitem(REGISTRY, "seven", dataclasses.replace(REGISTRY["digits"], num_classes=7))
    assert chance_accuracy({"dataset": "seven"}) == 1 / 7
    assert chance_accuracy({"dataset": "cifar100"}) == 0.01
    assert chance_accuracy({"import": "a.csv", "num_classes": 100}) == 0.01  # import --classes
    assert chance_accuracy({"name": "no dataset named"}) == CHANCE  # ten classes
    with pytest.raises(UserError, match="unknown dataset 'imagenet'; valid: cifar10, cifar100"):
        chance_accuracy({"dataset": "imagenet"})
