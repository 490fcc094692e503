"""The cross-workload aggregate on constructed cases whose answers are known."""

from __future__ import annotations

import pandas as pd
import pytest

from robustbench_opt.analysis.workloads import kendall_w, rank_table, transfer_table


def scores(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"optimizer": list(values), "variant": "default", "mean": list(values.values())}
    )


def test_two_workloads_that_reverse_the_ranking_have_no_agreement() -> None:
    ranks = rank_table(
        {"a": scores({"sgd": 0.9, "adam": 0.8, "sam": 0.7}),
         "b": scores({"sgd": 0.7, "adam": 0.8, "sam": 0.9})},
        "mean",
    )  # fmt: skip
    assert ranks.loc["sgd"].tolist() == [1.0, 3.0] and ranks.loc["sam"].tolist() == [3.0, 1.0]
    assert kendall_w(ranks) == pytest.approx(0.0)


def test_workloads_that_rank_alike_agree_fully_and_w_matches_its_formula() -> None:
    same = {name: scores({"sgd": 0.9, "adam": 0.8, "sam": 0.7}) for name in "abc"}
    assert kendall_w(rank_table(same, "mean")) == pytest.approx(1.0)
    ranks = pd.DataFrame({"a": [1, 2, 3], "b": [1, 3, 2]}, index=["x", "y", "z"])
    # rank sums 2, 5, 5; mean 4; S = 4 + 1 + 1 = 6; W = 12 * 6 / (4 * 24) = 0.75
    assert kendall_w(ranks) == pytest.approx(0.75)


def test_transfer_loses_what_one_shared_point_costs_against_each_workloads_best() -> None:
    def cells(accs: dict[float, float]) -> pd.DataFrame:
        rows = [
            {"optimizer": "adam", "variant": "default", "lr": lr, "weight_decay": 0.0,
             "seed": 0, "state": "done", "final_test_acc": acc,
             "axes": {"lr": lr, "weight_decay": 0.0}, "point": None}
            for lr, acc in accs.items()
        ]  # fmt: skip
        return pd.DataFrame(rows)

    # Workload a is best at lr 0.1 (0.9), b at lr 0.001 (0.8); the mean is best at lr 0.01.
    table = transfer_table(
        {"a": (cells({0.1: 0.9, 0.01: 0.8, 0.001: 0.2}), 0.1),
         "b": (cells({0.1: 0.2, 0.01: 0.7, 0.001: 0.8}), 0.1)},
        "final",
    )  # fmt: skip
    [row] = table.itertuples()
    assert row.point == "lr=0.01,weight_decay=0"
    assert row.mean_acc == pytest.approx(0.75)
    assert row.loss == pytest.approx(((0.9 - 0.8) + (0.8 - 0.7)) / 2)
