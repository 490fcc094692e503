"""Search-space designs: scipy's Sobol mapped onto each axis, stratified, prefix-stable."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import qmc

from robustbench_opt.space import Axis, design_points, grid_size, is_power_of_two

AXES = (
    Axis("lr", "log", low=1e-4, high=1e-1),
    Axis("weight_decay", "linear", low=0.0, high=1e-3),
    Axis("beta1", "one_minus_log", low=0.9, high=0.999),
    Axis("batch_size", "choices", values=(32, 64, 128, 256)),
)


def test_sobol_points_are_scipys_scrambled_sobol_mapped_onto_each_axis() -> None:
    points = design_points(AXES, "sobol", 16, seed=7)
    unit = qmc.Sobol(4, scramble=True, seed=7).random(16)
    for point, (u_lr, u_wd, u_b1, u_bs) in zip(points, unit, strict=True):
        assert point.values["lr"] == pytest.approx(10 ** (-4 + 3 * u_lr), rel=1e-11)
        assert point.values["weight_decay"] == pytest.approx(1e-3 * u_wd, rel=1e-11, abs=1e-15)
        one_minus = math.exp(math.log(0.1) + u_b1 * (math.log(0.001) - math.log(0.1)))
        assert point.values["beta1"] == pytest.approx(1 - one_minus, rel=1e-11)
        assert point.values["batch_size"] == (32, 64, 128, 256)[int(u_bs * 4)]
    assert [p.index for p in points] == list(range(16))


@pytest.mark.parametrize("m", [3, 5])
def test_every_1d_projection_of_2_to_the_m_sobol_points_is_stratified(m: int) -> None:
    n = 2**m
    axes = [Axis(f"x{i}", "linear", low=0.0, high=1.0) for i in range(5)]
    points = design_points(axes, "sobol", n, seed=3)
    for axis in axes:
        strata = sorted(int(p.values[axis.name] * n) for p in points)
        assert strata == list(range(n)), axis.name  # one point in each of the n strata


@pytest.mark.parametrize("design", ["sobol", "random"])
def test_growing_points_keeps_the_first_ones(design: str) -> None:
    small = design_points(AXES, design, 16, seed=1)
    large = design_points(AXES, design, 64, seed=1)
    assert large[:16] == small
    assert design_points(AXES, design, 16, seed=2) != small  # the seed matters


def test_random_design_is_numpys_seeded_generator_on_each_scale() -> None:
    points = design_points(AXES[:2], "random", 8, seed=5)
    unit = np.random.default_rng(5).random((8, 2))
    assert [p.values["lr"] for p in points] == pytest.approx(10 ** (-4 + 3 * unit[:, 0]))


def test_one_minus_log_range_spaces_one_minus_x_logarithmically_ends_included() -> None:
    axis = Axis("beta2", "one_minus_log", low=0.9, high=0.999, num=3)
    assert axis.grid_values() == (0.9, 0.99, 0.999)
    assert Axis("lr", "log", low=1e-3, high=1e-1, num=3).grid_values() == (1e-3, 1e-2, 1e-1)
    assert Axis("x", "linear", low=0.0, high=1.0, num=5).grid_values() == (0, 0.25, 0.5, 0.75, 1)


def test_integer_axes_round_and_a_grid_is_the_full_product() -> None:
    batch = Axis("batch_size", "log", low=16, high=256, num=5, integer=True)
    assert batch.grid_values() == (16, 32, 64, 128, 256)
    axes = [batch, Axis("label_smoothing", "list", values=(0.0, 0.1))]
    points = design_points(axes, "grid")
    assert grid_size(axes) == len(points) == 10
    assert points[1].values == {"batch_size": 16, "label_smoothing": 0.1}


def test_power_of_two() -> None:
    assert [n for n in range(1, 40) if is_power_of_two(n)] == [1, 2, 4, 8, 16, 32]
