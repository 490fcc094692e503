"""The robustness measures against grids worked out by hand: lr sensitivity, tunability and the
variance shares, with ties, one cell, all diverged, missing cells and several seeds."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from robustbench_opt.analysis.scores import compute_scores, lr_sensitivity_per_wd
from robustbench_opt.errors import UserError

CHANCE = 0.1


def trial(lr, wd, acc, state="done", seed=0, optimizer="a"):
    return {
        "optimizer": optimizer, "variant": "default", "lr": lr, "weight_decay": wd,
        "seed": seed, "state": state, "final_test_acc": acc, "best_test_acc": acc,
        "test_acc_at_best_val": math.nan,
    }  # fmt: skip


# lr rows ascending x wd columns (0, 0.1); the lr 0.1 / wd 0 cell (0.05) is below chance.
HAND_GRID = {(1e-3, 0.0): 0.80, (1e-3, 0.1): 0.70, (1e-2, 0.0): 0.90, (1e-2, 0.1): 0.85,
             (1e-1, 0.0): 0.05, (1e-1, 0.1): 0.60}  # fmt: skip


def hand_cells() -> pd.DataFrame:
    return pd.DataFrame([trial(lr, wd, acc) for (lr, wd), acc in HAND_GRID.items()])


def scores_of(cells: pd.DataFrame, **kwargs) -> pd.Series:
    return compute_scores(cells, chance=CHANCE, **kwargs).iloc[0]


def test_lr_sensitivity_floors_each_cell_at_chance_per_wd_and_overall():
    # wd 0: floored (0.80, 0.90, 0.10), best 0.90 -> losses (0.10, 0, 0.80), mean 0.30
    # wd 0.1: (0.70, 0.85, 0.60), best 0.85 -> losses (0.15, 0, 0.25), mean 0.4 / 3
    per_wd = lr_sensitivity_per_wd(hand_cells(), chance=CHANCE)
    assert list(per_wd["weight_decay"]) == [0.0, 0.1]
    assert per_wd["lr_sensitivity"].tolist() == pytest.approx([0.30, 0.4 / 3], abs=1e-12)
    assert scores_of(hand_cells())["lr_sensitivity"] == pytest.approx((0.30 + 0.4 / 3) / 2)


def test_tunability_is_best_minus_the_stated_default_cell():
    s = scores_of(hand_cells())  # default: the grid's centre, lr 1e-2 (index 1 of 3), wd 0
    assert (s["default_lr"], s["default_wd"]) == (1e-2, 0.0)
    assert s["tunability"] == pytest.approx(0.0)  # the centre is the best cell
    s = scores_of(hand_cells(), default_cell=(1e-3, 0.1))
    assert s["tunability"] == pytest.approx(0.90 - 0.70, abs=1e-12)
    with pytest.raises(UserError, match=r"default cell wd 0.5 is not on the grid \(0, 0.1\)"):
        scores_of(hand_cells(), default_cell=(1e-3, 0.5))


def test_variance_shares_of_lr_and_wd_by_hand():
    # grand mean 0.65; lr row means (0.75, 0.875, 0.325): SS_lr = 2 * 0.16625 = 0.3325;
    # wd column means (0.58333, 0.71667): SS_wd = 3 * 2 * (1/15)^2; total SS = 0.49
    s = scores_of(hand_cells())
    assert s["var_share_lr"] == pytest.approx(0.3325 / 0.49, abs=1e-12)
    assert s["var_share_wd"] == pytest.approx(3 * 2 * (1 / 15) ** 2 / 0.49, abs=1e-12)


def test_ties_give_zero_loss_and_the_first_best_cell():
    cells = pd.DataFrame([trial(1e-3, 0, 0.9), trial(1e-2, 0, 0.9), trial(1e-1, 0, 0.9)])
    s = scores_of(cells)
    assert (s["lr_sensitivity"], s["tunability"], s["variance"]) == (0.0, 0.0, 0.0)
    assert s["best_lr"] == 1e-3
    assert math.isnan(s["var_share_lr"])  # no variance to share out


def test_one_cell():
    s = scores_of(pd.DataFrame([trial(1e-2, 0, 0.7)]))
    assert (s["cells"], s["mean"], s["lr_sensitivity"], s["tunability"]) == (1, 0.7, 0.0, 0.0)
    assert s["e_best_1"] == 0.7 and math.isnan(s["e_best_2"])


def test_all_diverged_without_accuracy_count_at_chance_and_are_flagged():
    cells = pd.DataFrame([trial(lr, 0, math.nan, state="diverged") for lr in (1e-2, 1e-1)])
    s = scores_of(cells)
    assert (s["cells"], s["missing"], s["diverged_cells"], s["at_chance"]) == (2, 0, 2, 2)
    assert (s["mean"], s["variance"], s["max"]) == (CHANCE, 0.0, CHANCE)


def test_a_diverged_cell_never_improves_a_score():
    """Blowing up one cell of a grid lowers the mean and raises the spread, as it must."""
    base = scores_of(hand_cells())
    blown = hand_cells()
    blown.loc[3, ["state", "final_test_acc"]] = ["diverged", math.nan]  # 0.85 -> chance
    worse = scores_of(blown)
    assert worse["mean"] < base["mean"] and worse["lr_sensitivity"] > base["lr_sensitivity"]
    assert worse["variance"] > base["variance"] and worse["cells"] == base["cells"]


def test_missing_cells_are_left_out_and_make_the_variance_shares_undefined():
    cells = hand_cells()
    cells.loc[0, ["state", "final_test_acc"]] = ["failed", math.nan]  # lr 1e-3, wd 0
    s = scores_of(cells)
    assert (s["cells"], s["missing"]) == (5, 1)
    # wd 0 now (0.90, 0.10) -> losses (0, 0.80), mean 0.40; wd 0.1 as before
    assert s["lr_sensitivity"] == pytest.approx((0.40 + 0.4 / 3) / 2)
    assert math.isnan(s["var_share_lr"]) and math.isnan(s["var_share_wd"])


def test_several_seeds_are_averaged_before_the_measures():
    cells = pd.DataFrame(
        [trial(1e-3, 0, 0.70, seed=0), trial(1e-3, 0, 0.90, seed=1),  # mean 0.80
         trial(1e-2, 0, 0.85, seed=0), trial(1e-2, 0, 0.95, seed=1)]  # mean 0.90
    )  # fmt: skip
    s = scores_of(cells)
    assert s["seeds"] == 2 and s["mean"] == pytest.approx(0.85)
    assert s["lr_sensitivity"] == pytest.approx(0.05)  # (0.10 + 0) / 2
