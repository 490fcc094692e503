"""Study files: expansion into cells, canonical form, diffs, and one-line validation errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from robustbench_opt.config import Recipe
from robustbench_opt.errors import UserError
from robustbench_opt.spec import diff_specs, identity, load_study, log_range, spec_hash

BASE = """\
name: demo
dataset: digits
model: simple_cnn
recipe:
  epochs: 3
  batch_size: 32
optimizers:
  - adam
  - name: sam
    label: sam_adam
    kwargs: {base: adam, rho: 0.05}
lrs: [1.0e-1, 1.0e-2, 1.0e-3]
weight_decays: [0.0, 1.0e-4]
seeds: [0, 1]
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> tuple[str, str]:
    """The error message, and the `FILE:LINE` prefix every message must start with."""
    path = write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    return message, str(path)


def test_cells_are_the_product_of_optimizers_grid_and_seeds(tmp_path: Path) -> None:
    spec = load_study(write(tmp_path, BASE))
    cells = spec.cells()
    assert len(cells) == 2 * 3 * 2 * 2
    assert len({c.cell_id(spec.name) for c in cells}) == len(cells)
    sam = [c for c in cells if c.optimizer_label == "sam_adam"]
    assert len(sam) == 12
    assert {(c.lr, c.weight_decay, c.seed) for c in sam} == {
        (lr, wd, s) for lr in (0.1, 0.01, 0.001) for wd in (0.0, 1e-4) for s in (0, 1)
    }
    first = sam[0]
    assert first.optimizer == "sam" and first.label == "sam_adam"
    assert first.optimizer_kwargs == {"base": "adam", "rho": 0.05}
    assert first.recipe == Recipe(epochs=3, batch_size=32)
    assert (first.dataset, first.model, first.variant) == ("digits", "simple_cnn", "default")
    adam = next(c for c in cells if c.optimizer == "adam")
    assert adam.label is None and adam.optimizer_label == "adam"


def test_per_optimizer_grid_and_epochs_override_the_study(tmp_path: Path) -> None:
    text = BASE.replace(
        "    kwargs: {base: adam, rho: 0.05}\n",
        "    kwargs: {base: adam, rho: 0.05}\n"
        "    lrs: [5.0e-2]\n    weight_decays: {log_range: [1.0e-4, 1.0e-2], num: 3}\n"
        "    epochs: 2\n",
    )
    cells = load_study(write(tmp_path, text)).cells()
    sam = [c for c in cells if c.optimizer == "sam"]
    assert sorted({(c.lr, c.weight_decay) for c in sam}) == [
        (0.05, 0.0001),
        (0.05, 0.001),
        (0.05, 0.01),
    ]
    assert {c.recipe.epochs for c in sam} == {2}
    adam = [c for c in cells if c.optimizer == "adam"]
    assert len(adam) == 3 * 2 * 2 and {c.recipe.epochs for c in adam} == {3}


def test_variants_expand_with_their_recipe_overrides(tmp_path: Path) -> None:
    text = BASE + textwrap.dedent("""\
        variants:
          base: {}
          cosine: {schedule: cosine, augment: [crop_flip, trivialaugment]}
          wd_off: {schedule: cosine, wd_off_fraction: 0.75}
        """)
    spec = load_study(write(tmp_path, text))
    cells = spec.cells()
    assert len(cells) == 2 * 3 * 3 * 2 * 2
    recipes = {c.variant: c.recipe for c in cells}
    assert recipes["base"] == Recipe(epochs=3, batch_size=32)
    assert recipes["cosine"] == Recipe(
        epochs=3, batch_size=32, schedule="cosine", augment=("crop_flip", "trivialaugment")
    )
    assert recipes["wd_off"].wd_off_fraction == 0.75 and recipes["wd_off"].augment == ()
    assert list(spec.variants) == ["base", "cosine", "wd_off"]


def test_every_recipe_field_is_accepted_with_its_type(tmp_path: Path) -> None:
    explicit = Recipe(epochs=4, step_milestones=(2, 3), augment=("crop_flip",), wd_off_fraction=0.5)
    lines = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in explicit.to_dict().items())
    text = BASE.replace("recipe:\n  epochs: 3\n  batch_size: 32\n", "recipe:\n" + lines)
    assert load_study(write(tmp_path, text)).recipe == explicit


def test_log_range_is_log_spaced_with_exact_ends() -> None:
    values = log_range(1e-4, 1e-1, 4)
    assert values == (1e-4, 1e-3, 1e-2, 1e-1)
    down = log_range(0.1, 0.001, 5)
    assert down[0] == 0.1 and down[-1] == 0.001 and down[2] == 0.01
    ratios = [down[i + 1] / down[i] for i in range(4)]
    assert all(math.isclose(r, 10**-0.5, rel_tol=1e-10) for r in ratios)


def test_log_range_in_a_study_and_bare_exponent_numbers(tmp_path: Path) -> None:
    text = BASE.replace("lrs: [1.0e-1, 1.0e-2, 1.0e-3]", "lrs: {log_range: [1e-3, 1e-1], num: 3}")
    text = text.replace("weight_decays: [0.0, 1.0e-4]", "weight_decays: [0, 1e-4]")
    spec = load_study(write(tmp_path, text))
    assert spec.lrs == (0.001, 0.01, 0.1)
    assert spec.weight_decays == (0.0, 1e-4)
    assert all(isinstance(v, float) for v in spec.weight_decays)


def test_to_dict_is_canonical_json_safe_and_independent_of_key_order(tmp_path: Path) -> None:
    first = load_study(write(tmp_path, BASE, "a.yaml")).to_dict()
    lines = BASE.splitlines(keepends=True)
    reordered = "".join(lines[6:] + lines[:6])  # optimizers and grids before name/recipe
    second = load_study(write(tmp_path, reordered, "b.yaml")).to_dict()
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert json.loads(json.dumps(first)) == first
    assert first["recipe"]["epochs"] == 3 and first["recipe"]["schedule"] == "constant"
    assert first["optimizers"][1] == {
        "name": "sam",
        "label": "sam_adam",
        "kwargs": {"base": "adam", "rho": 0.05},
        "lrs": None,
        "weight_decays": None,
        "epochs": None,
    }


def test_diff_specs_names_what_changed(tmp_path: Path) -> None:
    old = load_study(write(tmp_path, BASE, "old.yaml")).to_dict()
    assert diff_specs(old, old) == []
    text = BASE.replace("epochs: 3", "epochs: 20").replace("seeds: [0, 1]", "seeds: [0]")
    text = text.replace("  - adam\n", "  - adamw\n", 1)
    text = text.replace("{base: adam, rho: 0.05}", "{base: adam, rho: 0.1}")
    new = load_study(write(tmp_path, text, "new.yaml")).to_dict()
    assert diff_specs(old, new) == [
        "recipe.epochs: 3 -> 20",
        "optimizers: - adam",
        "optimizers: + adamw",
        "optimizers.sam_adam.kwargs.rho: 0.05 -> 0.1",
        "seeds: [0, 1] -> [0]",
    ]


def test_identity_leaves_out_speed_switches_but_keeps_bf16(tmp_path: Path) -> None:
    base = identity(load_study(write(tmp_path, BASE, "old.yaml")).to_dict())
    fast = BASE.replace("batch_size: 32\n", "batch_size: 32\n  compile: true\n")
    fast += "variants:\n  a: {channels_last: true, data_on_device: false}\n  b: {}\n"
    slow = BASE + "variants:\n  a: {}\n  b: {}\n"
    assert identity(load_study(write(tmp_path, fast, "fast.yaml")).to_dict()) == identity(
        load_study(write(tmp_path, slow, "slow.yaml")).to_dict()
    )
    assert base != identity(load_study(write(tmp_path, slow, "slow.yaml")).to_dict())
    bf16 = BASE.replace("batch_size: 32\n", "batch_size: 32\n  amp_bf16: true\n")
    assert identity(load_study(write(tmp_path, bf16, "bf16.yaml")).to_dict()) != base


def test_spec_hash_and_cell_ids_keep_their_values(tmp_path: Path) -> None:
    """Values computed before the study-file code was restructured: stored studies resume."""
    text = BASE + "variants:\n  base: {}\n  cosine: {schedule: cosine, augment: [crop_flip]}\n"
    spec = load_study(write(tmp_path, text))
    ids = [c.cell_id(spec.name) for c in spec.cells()]
    assert spec_hash(spec.to_dict()) == (
        "9d54452868e256879a1f05aace5085aa2ff6adff7d5583db2101f2ce153a78d8"
    )
    assert (len(ids), ids[0], ids[-1]) == (48, "79934f37f917e51c", "ebb03bb3f6da135d")


def test_diff_specs_reports_a_reordering_of_optimizers(tmp_path: Path) -> None:
    old = load_study(write(tmp_path, BASE, "old.yaml")).to_dict()
    new = dict(old, optimizers=old["optimizers"][::-1])
    assert diff_specs(old, new) == ["optimizers: order adam, sam_adam -> sam_adam, adam"]


# --- validation errors: one line, FILE:LINE:, the key path, and the fix -------------------------


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        (
            "recipe:\n  epochs: 3",
            "recipe:\n  epoch: 3",
            5,
            ["recipe.epoch", "did you mean 'epochs'"],
        ),
        ("optimizers:", "optimisers:", 7, ["optimisers", "did you mean 'optimizers'"]),
        ("    label: sam_adam", "    lables: sam_adam", 10, ["optimizers[1].lables", "'label'"]),
        ("model: simple_cnn\n", "", 1, ["missing required key 'model'"]),
        ("epochs: 3", "epochs: ten", 5, ["recipe.epochs", "expected an integer", "'ten'"]),
        ("batch_size: 32", "batch_size: 0", 6, ["recipe.batch_size", "integer >= 1"]),
        (
            "batch_size: 32",
            "cutmix_prob: 1.5",
            6,
            ["recipe.cutmix_prob", "must be a probability in [0, 1], got 1.5"],
        ),
        (
            "batch_size: 32",
            "step_milestones: [2, 0]",
            6,
            ["recipe.step_milestones[1]", "must be an epoch >= 1, got 0"],
        ),
        ("epochs: 3", "schedule: cosin", 5, ["recipe.schedule", "did you mean 'cosine'"]),
        (
            "epochs: 3",
            "augment: [crop_flip, trivial_augment]",
            5,
            ["recipe.augment[1]", "'trivialaugment'"],
        ),
        (
            "dataset: digits",
            "dataset: mnist",
            2,
            ["dataset", "unknown dataset 'mnist'", "cifar10, cifar100, digits, mnist1d, mnist5k"],
        ),
        (
            "dataset: digits",
            "dataset: mnist1d",
            3,
            [
                "model",
                "'simple_cnn' does not fit mnist1d's examples of shape (1, 40)",
                "models that fit: cnn1d, mlp",
            ],
        ),  # fmt: skip
        (
            "dataset: digits\nmodel: simple_cnn",
            "dataset: mnist1d\nmodel: cnn1d\nvariants:\n  aug: {augment: [crop_flip]}",
            6,
            ["recipe: augment ['crop_flip'] needs images (C, H, W)", "set augment: []"],
        ),
        ("lrs: [1.0e-1, 1.0e-2, 1.0e-3]", "lrs: []", 12, ["lrs", "empty grid"]),
        ("lrs: [1.0e-1, 1.0e-2, 1.0e-3]", "lrs: [0.1, 0]", 12, ["lrs[1]", "must be > 0"]),
        ("lrs: [1.0e-1, 1.0e-2, 1.0e-3]", "lrs: [-0.1]", 12, ["lrs[0]", "must be > 0"]),
        ("lrs: [1.0e-1, 1.0e-2, 1.0e-3]", "lrs: [0.1, 0.1]", 12, ["lrs", "duplicate"]),
        ("lrs: [1.0e-1, 1.0e-2, 1.0e-3]", "lrs: 0.1", 12, ["lrs", "expected a list"]),
        (
            "weight_decays: [0.0, 1.0e-4]",
            "weight_decays: [-1.0e-4]",
            13,
            ["weight_decays[0]", ">= 0"],
        ),
        ("seeds: [0, 1]", "seeds: [0, 1.5]", 14, ["seeds[1]", "expected an integer"]),
        ("seeds: [0, 1]", "seeds: [0, zero]", 14, ["seeds[1]", "'zero'"]),
        (
            "lrs: [1.0e-1, 1.0e-2, 1.0e-3]",
            "lrs: {log_range: [0, 1], num: 3}",
            12,
            ["lrs.log_range", "> 0"],
        ),
        (
            "lrs: [1.0e-1, 1.0e-2, 1.0e-3]",
            "lrs: {log_range: [0.1, 1], nums: 3}",
            12,
            ["lrs.nums", "'num'"],
        ),
        ("lrs: [1.0e-1, 1.0e-2, 1.0e-3]", "", 8, ["optimizers[0]", "no learning rates"]),
        (
            "    label: sam_adam",
            "    label: adam",
            9,
            ["optimizers[1]", "label 'adam' already used"],
        ),
        ("seeds: [0, 1]", "resources: {gpus: 1.5}", 14, ["resources.gpus", "(0, 1] or auto"]),
        ("seeds: [0, 1]", "resources: {gpus: half}", 14, ["resources.gpus", "'half'"]),
        ("seeds: [0, 1]", "resources: {gpu: 1}", 14, ["resources.gpu", "did you mean 'gpus'"]),
        ("seeds: [0, 1]", "max_concurrent: 0", 14, ["max_concurrent", ">= 1"]),
        ("seeds: [0, 1]", "val_fraction: 1.0", 14, ["val_fraction", "[0, 1)"]),
        ("name: demo", "name: demo\nname: again", 2, ["name", "duplicate key", "line 1"]),
        (
            "seeds: [0, 1]",
            "variants:\n  cos: {schedul: cosine}",
            15,
            ["variants.cos.schedul", "'schedule'"],
        ),
        (
            "seeds: [0, 1]",
            "variants:\n  cos: {schedule: linear}",
            15,
            ["variants.cos.schedule", "valid:"],
        ),
    ],
)
def test_each_bad_input_is_one_line_naming_the_key_and_line(
    tmp_path: Path, old: str, new: str, line: int, expected: list[str]
) -> None:
    assert old in BASE
    message, path = load_error(tmp_path, BASE.replace(old, new, 1))
    assert message.startswith(f"{path}:{line}: "), message
    for part in expected:
        assert part in message, message


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    message, path = load_error(tmp_path, BASE.replace("  - adam", "  - adam: [", 1))
    assert message.startswith(f"{path}:9:") and "YAML syntax error" in message, message


@pytest.mark.parametrize(
    ("old", "new", "line", "expected"),
    [
        ("  - adam", "  - adma", 8, ["optimizers[0]", "unknown optimizer 'adma'", "'adam'"]),
        ("  - name: sam", "  - name: sma", 9, ["optimizers[1].name", "'sam'"]),
        ("dataset: digits", "dataset: cifar", 2, ["dataset", "did you mean 'cifar10'"]),
        ("model: simple_cnn", "model: resnet_20", 3, ["model", "did you mean 'resnet20'"]),
        ("rho: 0.05}", "rhoo: 0.05}", 11, ["optimizers[1].kwargs", "'rhoo'", "did you mean 'rho'"]),
        ("rho: 0.05}", "rho: 0.05, lr: 1}", 11, ["optimizers[1].kwargs", "'lr'", "study grid"]),
        ("rho: 0.05}", "rho: big}", 11, ["optimizers[1].kwargs", "'rho'", "a number", "'big'"]),
        (
            "rho: 0.05}",
            "rho: 0.05, betas: oops}",
            11,
            ["optimizers[1].kwargs", "'betas'", "a list of items", "'oops'", "[0.9, 0.999]"],
        ),
    ],
)
def test_unknown_registry_names_and_keywords_suggest_the_closest(
    tmp_path: Path, old: str, new: str, line: int, expected: list[str]
) -> None:
    message, path = load_error(tmp_path, BASE.replace(old, new, 1))
    assert message.startswith(f"{path}:{line}: "), message
    for part in expected:
        assert part in message, message


def test_missing_and_empty_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_study(tmp_path / "nope.yaml")
    message, _ = load_error(tmp_path, "")
    assert "empty" in message
    message, path = load_error(tmp_path, "- just\n- a list\n")
    assert message.startswith(f"{path}:1: ") and "expected a mapping" in message


def test_importing_spec_does_not_import_torch() -> None:
    code = "import sys, robustbench_opt.spec; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
