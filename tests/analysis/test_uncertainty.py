"""Bootstrap intervals: coverage of a known truth on simulated studies, determinism, what each
interval resamples, and pairwise differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robustbench_opt.analysis.scores import compute_scores
from robustbench_opt.analysis.uncertainty import (
    OVER_CELLS,
    OVER_SEEDS,
    bootstrap,
    compare_pair,
    intervals,
)
from robustbench_opt.errors import UserError

CHANCE = 0.1
LRS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
WDS = (0.0, 1e-4, 1e-3, 1e-2, 1e-1)


def frame(accs: dict[tuple[float, float, int], float], optimizer: str = "a") -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "optimizer": optimizer,
                "variant": "default",
                "lr": lr,
                "weight_decay": wd,
                "seed": seed,
                "state": "done",
                "final_test_acc": acc,
                "best_test_acc": acc,
                "test_acc_at_best_val": math.nan,
            }  # fmt: skip
            for (lr, wd, seed), acc in accs.items()
        ]
    )


def covered(cells: pd.DataFrame, truth: float, seed: int) -> bool:
    ci = intervals(bootstrap(cells, chance=CHANCE, resamples=400, seed=seed)).iloc[0]
    return bool(ci["mean_lo"] <= truth <= ci["mean_hi"])


def test_intervals_over_grid_cells_cover_the_population_mean_about_95_percent():
    """Each study draws 25 cells from a population of mean 0.90; the truth is that mean."""
    rng = np.random.default_rng(20261201)
    hits = []
    for rep in range(300):
        accs = rng.normal(0.90, 0.03, size=25)
        cells = frame({(lr, wd, 0): a for (lr, wd), a in zip(
            [(lr, wd) for lr in LRS for wd in WDS], accs, strict=True)})  # fmt: skip
        hits.append(covered(cells, 0.90, rep))
    rate = float(np.mean(hits))
    assert 0.90 <= rate <= 0.98, rate  # measured: 0.917


def test_intervals_over_seeds_cover_the_grid_mean_about_95_percent():
    """A fixed 5 x 5 grid of true cell accuracies, 4 noisy seeds per cell (sd 0.01); the truth
    is the mean of the true cells."""
    rng = np.random.default_rng(7)
    true = rng.uniform(0.6, 0.95, size=(5, 5))
    hits = []
    for rep in range(300):
        accs = {
            (lr, wd, s): true[i, j] + rng.normal(0, 0.01)
            for i, lr in enumerate(LRS) for j, wd in enumerate(WDS) for s in range(4)
        }  # fmt: skip
        hits.append(covered(frame(accs), float(true.mean()), rep))
    rate = float(np.mean(hits))
    assert 0.90 <= rate <= 0.98, rate  # measured: 0.940


def test_seeded_per_entry_and_says_what_it_resamples():
    one_seed = frame({(lr, 0.0, 0): 0.5 + 0.1 * k for k, lr in enumerate(LRS)})
    seeds = frame({(lr, 0.0, s): 0.5 + 0.1 * k + 0.01 * s for k, lr in enumerate(LRS)
                   for s in range(3)}, optimizer="b")  # fmt: skip
    both = pd.concat([one_seed, seeds], ignore_index=True)
    first = intervals(bootstrap(both, chance=CHANCE, resamples=200, seed=1))
    again = intervals(bootstrap(both, chance=CHANCE, resamples=200, seed=1))
    pd.testing.assert_frame_equal(first, again)
    alone = intervals(bootstrap(one_seed, chance=CHANCE, resamples=200, seed=1))
    pd.testing.assert_frame_equal(alone, first.iloc[:1][alone.columns])  # "b" changes no "a"
    assert list(first["over"]) == [OVER_CELLS, OVER_SEEDS]
    assert math.isnan(first["lr_sensitivity_lo"].iloc[0])  # no layout when cells are resampled
    assert not math.isnan(first["lr_sensitivity_lo"].iloc[1])
    other = intervals(bootstrap(both, chance=CHANCE, resamples=200, seed=2))
    assert not first.equals(other)


def test_pairwise_difference_separates_clearly_different_optimizers_only():
    rng = np.random.default_rng(0)
    cells = {
        name: frame(
            {
                (lr, wd, s): level + rng.normal(0, 0.01)
                for lr in LRS[:3]
                for wd in WDS[:3]
                for s in range(3)
            },
            optimizer=name,
        )  # fmt: skip
        for name, level in (("good", 0.90), ("bad", 0.70), ("twin", 0.9005))
    }
    both = pd.concat(cells.values(), ignore_index=True)
    scores = compute_scores(both, chance=CHANCE)
    boots = bootstrap(both, chance=CHANCE, resamples=500)
    diff = compare_pair(scores, boots, "good", "bad", "mean")
    assert diff.separable and diff.low > 0.15 and diff.difference == pytest.approx(0.20, abs=0.01)
    assert diff.low <= diff.difference <= diff.high
    assert not compare_pair(scores, boots, "good", "twin", "mean").separable
    with pytest.raises(UserError, match="unknown optimizer 'nope'"):
        compare_pair(scores, boots, "good", "nope", "mean")
    with pytest.raises(UserError, match=r"confidence level 1.0 must be in \(0, 1\)"):
        compare_pair(scores, boots, "good", "bad", "mean", level=1.0)
