"""Search spaces in study files: axes of any hyperparameter, designs, and one-line errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from scipy.stats import qmc

from robustbench_opt.errors import UserError
from robustbench_opt.spec import identity, load_study, spec_hash

SPACE = """\
name: sp
dataset: digits
model: simple_cnn
recipe: {epochs: 1, batch_size: 64}
space:
  design: sobol
  points: 8
  seed: 3
  axes:
    lr: {log_range: [1.0e-4, 1.0e-1]}
    weight_decay: {range: [0.0, 1.0e-3]}
optimizers:
  - name: momentum
    space:
      lr: {log_range: [1.0e-3, 1.0]}
      momentum: {one_minus_log_range: [0.5, 0.999]}
  - name: adam
    space:
      beta1: {one_minus_log_range: [0.5, 0.99]}
      batch_size: {choices: [32, 64, 128]}
seeds: [0, 1]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(UserError) as info:
        load_study(write(tmp_path, text))
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "study.yaml") + ":")
    return message


def test_a_sobol_space_gives_each_entry_its_axes_mapped_from_scipys_points(tmp_path) -> None:
    spec = load_study(write(tmp_path, SPACE))
    cells = spec.cells()
    assert len(cells) == 2 * 8 * 2  # entries x points x seeds
    momentum = [c for c in cells if c.optimizer == "momentum" and c.seed == 0]
    adam = [c for c in cells if c.optimizer == "adam" and c.seed == 0]
    assert [c.point for c in momentum] == list(range(8))
    # momentum's axes: lr (its own range), weight_decay, momentum -> d = 3
    unit = qmc.Sobol(3, scramble=True, seed=3).random(8)
    for cell, (u_lr, u_wd, _) in zip(momentum, unit, strict=True):
        assert cell.lr == pytest.approx(10 ** (-3 + 3 * u_lr), rel=1e-10)
        assert cell.weight_decay == pytest.approx(1e-3 * u_wd, rel=1e-10, abs=1e-15)
        assert 0.5 <= cell.optimizer_kwargs["momentum"] <= 0.999
    # adam's: lr, weight_decay, beta1, batch_size -> d = 4; beta2 keeps its default
    unit = qmc.Sobol(4, scramble=True, seed=3).random(8)
    for cell, (u_lr, _, _, u_bs) in zip(adam, unit, strict=True):
        assert cell.lr == pytest.approx(10 ** (-4 + 3 * u_lr), rel=1e-10)
        assert cell.optimizer_kwargs["betas"][1] == 0.999
        assert cell.recipe.batch_size == (32, 64, 128)[int(u_bs * 3)]
    assert len({c.cell_id("sp") for c in cells}) == len(cells)


def test_growing_points_keeps_the_first_cells_and_their_identities(tmp_path) -> None:
    small = load_study(write(tmp_path, SPACE))
    large = load_study(write(tmp_path, SPACE.replace("points: 8", "points: 16")))
    old = {c.cell_id("sp") for c in small.cells()}
    new = {c.cell_id("sp") for c in large.cells()}
    assert old < new and len(new) == 2 * len(old)
    assert spec_hash(small.to_dict()) == spec_hash(large.to_dict())  # points: not identity
    changed = load_study(write(tmp_path, SPACE.replace("design: sobol", "design: random")))
    assert spec_hash(changed.to_dict()) != spec_hash(small.to_dict())
    assert "points" not in identity(small.to_dict())["space"]


def test_a_grid_space_over_beta1_and_beta2_at_one_lr(tmp_path) -> None:
    text = """\
    name: betas
    dataset: digits
    model: simple_cnn
    space:
      axes:
        lr: [0.003]
        beta1: {one_minus_log_range: [0.9, 0.999], num: 3}
        beta2: [0.99, 0.999]
    optimizers: [adam, adamw]
    """
    spec = load_study(write(tmp_path, text))
    cells = spec.cells()
    assert spec.design == "grid" and len(cells) == 2 * 3 * 2
    betas = [c.optimizer_kwargs["betas"] for c in cells if c.optimizer == "adam"]
    assert [tuple(b) for b in betas] == [
        (b1, b2) for b1 in (0.9, 0.99, 0.999) for b2 in (0.99, 0.999)
    ]
    assert all(c.point is None and c.weight_decay == 0.0 for c in cells)


def test_integer_recipe_axes_are_rounded(tmp_path) -> None:
    text = SPACE.replace(
        "      batch_size: {choices: [32, 64, 128]}", "      batch_size: {log_range: [16, 256]}"
    )
    cells = load_study(write(tmp_path, text)).cells()
    sizes = {c.recipe.batch_size for c in cells if c.optimizer == "adam"}
    assert all(isinstance(s, int) and 16 <= s <= 256 for s in sizes) and len(sizes) > 1


@pytest.mark.parametrize(
    ("old", "new", "needles"),
    [
        (  # an axis the optimizer lacks names what it has
            "      momentum: {one_minus_log_range: [0.5, 0.999]}",
            "      beta1: {one_minus_log_range: [0.5, 0.999]}",
            ["momentum (momentum) has no hyperparameter 'beta1'", "it has: lr, weight_decay, mom"],
        ),
        (
            "      batch_size: {choices: [32, 64, 128]}",
            "      no_such: [1, 2]",
            ["has no hyperparameter 'no_such'", "recipe fields: epochs, batch_size"],
        ),
        (
            "lr: {log_range: [1.0e-4, 1.0e-1]}",
            "lr: {log_range: [1.0e-1, 1.0e-4]}",
            ["space.axes.lr.log_range", "lo must be below hi"],
        ),
        (
            "weight_decay: {range: [0.0, 1.0e-3]}",
            "weight_decay: {log_range: [0.0, 1.0e-3]}",
            ["a log range must stay above 0"],
        ),
        ("points: 8", "points: 12", ["12 is not a power of two", "use 8 or 16"]),
        ("seeds: [0, 1]", "seeds: [0, 1]\nlrs: [0.1]", ["move these values into space.axes.lr"]),
        (
            "      beta1: {one_minus_log_range: [0.5, 0.99]}",
            "      beta1: {one_minus_log_range: [0.5, 1.5]}",
            ["hi must be below 1"],
        ),
        (
            "      beta1: {one_minus_log_range: [0.5, 0.99]}",
            "      beta1: [0.5, 1.2]",
            ["beta1 must be [0, 1), got 1.2"],
        ),
        ("design: sobol", "design: halton", ["unknown design 'halton'", "grid, sobol, random"]),
        (
            "lr: {log_range: [1.0e-4, 1.0e-1]}",
            "lr: {log_range: [1.0e-4, 1.0e-1], num: 4}",
            ["num applies to grids"],
        ),
    ],
)
def test_bad_spaces_are_one_line_errors(tmp_path, old: str, new: str, needles: list[str]) -> None:
    assert old in SPACE
    message = load_error(tmp_path, SPACE.replace(old, new))
    for needle in needles:
        assert needle in message, message


def test_a_grid_too_large_names_its_size_and_suggests_sobol(tmp_path) -> None:
    text = (
        SPACE.replace("  design: sobol\n  points: 8\n", "  design: grid\n")
        .replace("{log_range: [1.0e-4, 1.0e-1]}", "{log_range: [1.0e-4, 1.0e-1], num: 20}")
        .replace("{range: [0.0, 1.0e-3]}", "{range: [0.0, 1.0e-3], num: 20}")
        .replace("{log_range: [1.0e-3, 1.0]}", "{log_range: [1.0e-3, 1.0], num: 20}")
        .replace(
            "{one_minus_log_range: [0.5, 0.999]}", "{one_minus_log_range: [0.5, 0.999], num: 20}"
        )
    )
    message = load_error(tmp_path, text)
    assert "the grid of momentum has 8000 points (16000 cells" in message
    assert "design: sobol, points: 64" in message


def test_an_entry_space_without_the_studys_and_a_range_without_num_on_a_grid(tmp_path) -> None:
    text = """\
    name: x
    dataset: digits
    model: simple_cnn
    lrs: [0.1]
    weight_decays: [0.0]
    optimizers:
      - name: adam
        space: {beta1: [0.9]}
    """
    assert "needs the study's space" in load_error(tmp_path, text)
    grid = SPACE.replace("  design: sobol\n  points: 8\n", "")
    assert "a grid needs num for a range axis" in load_error(tmp_path, grid)


@pytest.mark.parametrize(
    ("workloads", "needle"),
    [
        ("workloads: []", "expected a non-empty list of workloads"),
        (
            "workloads:\n  - {dataset: digits, model: simple_cnn}\n"
            "  - {dataset: digits, model: simple_cnn}",
            "workload name 'digits' is already workloads[0]'s",
        ),
        (
            "workloads:\n  - {name: a, dataset: digits, model: simple_cnn}\n"
            "  - {name: b, dataset: digits, model: simple_cnn}",
            "workloads[1] repeats workloads[0]",
        ),
        ("workloads:\n  - {dataset: digitz, model: simple_cnn}", "unknown dataset 'digitz'"),
        ("dataset: digits\nworkloads:\n  - {dataset: digits, model: mlp}", "move dataset"),
    ],
)
def test_bad_workload_lists_are_one_line_errors(tmp_path, workloads: str, needle: str) -> None:
    text = f"name: w\n{workloads}\noptimizers: [adam]\nlrs: [0.1]\nweight_decays: [0.0]\n"
    assert needle in load_error(tmp_path, text)
