"""Studies side by side and performance profiles, against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robustbench_opt.analysis.compare import (
    check_studies,
    performance_profiles,
    ratios,
    shared_optimizers,
)
from robustbench_opt.errors import UserError


def long(values: dict[tuple[str, str], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"study": s, "optimizer": o, "value": v, "lo": math.nan, "hi": math.nan}
            for (s, o), v in values.items()
        ]  # fmt: skip
    )


# Mean accuracy (higher is better) of three optimizers on two studies; "c" is absent from s2.
MEANS = {("s1", "a"): 0.90, ("s1", "b"): 0.81, ("s1", "c"): 0.45,
         ("s2", "a"): 0.88, ("s2", "b"): 0.96}  # fmt: skip


def test_ratio_to_the_best_points_the_right_way_for_each_direction():
    r = ratios(long(MEANS), "mean")  # best / value
    assert r.loc["a", "s1"] == 1.0 and r.loc["b", "s1"] == pytest.approx(0.90 / 0.81)
    assert r.loc["a", "s2"] == pytest.approx(0.96 / 0.88) and r.loc["b", "s2"] == 1.0
    assert np.isnan(r.loc["c", "s2"])
    variance = long({("s1", "a"): 2e-4, ("s1", "b"): 1e-4, ("s2", "a"): 0.0, ("s2", "b"): 3e-4})
    r = ratios(variance, "variance")  # value / best
    assert r.loc["a", "s1"] == pytest.approx(2.0) and r.loc["b", "s1"] == 1.0
    assert r.loc["a", "s2"] == 1.0 and np.isinf(r.loc["b", "s2"])  # over a best of 0


def test_performance_profiles_count_the_share_of_studies_within_tau():
    profiles = performance_profiles(long(MEANS), "mean", taus=(1.0, 1.1, 1.2, 2.0, 2.5))
    # a: ratios (1, 1.0909); b: (1.1111, 1); c: (2.0, absent)
    assert profiles.loc["a"].tolist() == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert profiles.loc["b"].tolist() == [0.5, 0.5, 1.0, 1.0, 1.0]
    assert profiles.loc["c"].tolist() == [0.0, 0.0, 0.0, 0.5, 0.5]
    assert list(profiles.index) == ["a", "b", "c"]  # the order the studies list them
    assert shared_optimizers(long(MEANS)) == ["a", "b"]


def test_a_comparison_needs_two_distinct_studies():
    with pytest.raises(UserError, match=r"compare needs two or more studies, got 1 \(s1\)"):
        check_studies(["s1"])
    with pytest.raises(UserError, match="study 's1' is named twice"):
        check_studies(["s1", "s1"])
    with pytest.raises(UserError, match="unknown measure 'var_share_lr'"):
        ratios(long(MEANS), "var_share_lr")  # no direction: no "best"
