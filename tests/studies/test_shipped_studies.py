"""Every study file shipped in studies/ loads, validates and expands to the grid it promises."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from robustbench_opt.datasets import dataset_info
from robustbench_opt.spec import load_study, spec_hash

STUDIES = Path(__file__).resolve().parents[2] / "studies"
SHIPPED = sorted(STUDIES.glob("*.yaml"))
# Each shipped study's spec hash (its first 16 digits) and a digest of its cell ids in plan order,
# computed before the study-file code was last restructured (the three space studies: when they
# were added): a database made then resumes only while these hold. Editing a study file
# changes its line here (and makes it a new study).
PINNED = {
    "cifar10_nadamw_space": ("82e4efea51cde8c0", "10ffeba94861c6c4"),
    "digits_betas": ("0b7ab62208a0376b", "34009a997c2bfce8"),
    "digits_space": ("cec5330e27dd4c55", "dbf968da9e6f5464"),
    "fast_cifar10": ("d8fd4cdf58b8e3d9", "34f2ea7e0e33e891"),
    "fast_cifar10_proposed": ("6ce7dd38456b597f", "d126cc62d93ddf62"),
    "kaggle_optimizers": ("bab4f06065928e71", "1e8c69d8da096dd7"),
    "mnist5k": ("8759df2d3ce6a4fe", "42e2c1c493c4e4ab"),
    "paper_table1": ("50aac708d6bf4ba7", "27ef61d8cbc8b72e"),
    "paper_table2": ("932d202be98a72b5", "d06c827245e64b7a"),
    "paper_table3": ("d080a2f9b041ba23", "f954e13a4355541f"),
    "quickstart": ("51fbbede614cc063", "cef3ce61bdcaa8ac"),
    "sam_blog_cnn": ("86664c54a8dd1ac8", "3e459eb232eae027"),
    "suite_cpu": ("63b78ae4445b759d", "90c9b081f36c174b"),
    "sam_resnet20": ("88685c20e081c2b5", "66b14207ae2f401e"),
}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_study_loads_and_expands_to_its_grid(path: Path) -> None:
    spec = load_study(path)
    cells = spec.cells()
    expected = 0
    for opt in spec.optimizers:
        if spec.space is None:
            lrs = opt.lrs if opt.lrs is not None else spec.lrs
            wds = opt.weight_decays if opt.weight_decays is not None else spec.weight_decays
            points = len(lrs) * len(wds)
        elif spec.design == "grid":
            points = math.prod(len(a.grid_values()) for a in spec.entry_axes(opt))
        else:
            points = spec.space.points
        expected += points * len(spec.variants) * len(spec.seeds)
    expected *= len(spec.workloads or [None])
    assert len(cells) == expected > 0
    assert len({c.cell_id(spec.name) for c in cells}) == len(cells)
    assert spec.name == path.stem


@pytest.mark.parametrize("name", sorted(PINNED))
def test_shipped_study_keeps_its_spec_hash_and_cell_ids(name: str) -> None:
    spec = load_study(STUDIES / f"{name}.yaml")
    ids = " ".join(c.cell_id(spec.name) for c in spec.cells())
    digest = hashlib.sha256(ids.encode()).hexdigest()[:16]
    assert (spec_hash(spec.to_dict())[:16], digest) == PINNED[name]


@pytest.mark.parametrize(("name", "dataset"), [("quickstart", "digits"), ("mnist5k", "mnist5k")])
def test_the_small_studies_run_anywhere(name: str, dataset: str) -> None:
    spec = load_study(STUDIES / f"{name}.yaml")
    assert spec.dataset == dataset and not spec.download and spec.resources.gpus == 0
    assert dataset_info(dataset).embedded
    assert len({c.optimizer_label for c in spec.cells()}) >= 4


def test_paper_table3_is_the_5x5_grid_of_the_proposed_optimizer() -> None:
    spec = load_study(STUDIES / "paper_table3.yaml")
    cells = spec.cells()
    assert len(cells) == 25
    assert {c.optimizer for c in cells} == {"proposed"}
    assert sorted({c.lr for c in cells}) == [1e-3, 5e-3, 1e-2, 5e-2, 1e-1]
    assert sorted({c.weight_decay for c in cells}) == [1e-4, 5e-4, 1e-3, 5e-3, 1e-2]
    recipe = cells[0].recipe
    assert (cells[0].model, recipe.schedule, recipe.cutmix_prob) == ("resnet34", "cosine", 1.0)
    assert recipe.augment == ("crop_flip", "trivialaugment") and recipe.wd_off_fraction == 0.75


def test_paper_table2_uses_each_optimizers_table2_weight_decay() -> None:
    cells = load_study(STUDIES / "paper_table2.yaml").cells()
    assert len(cells) == 18
    names = {c.optimizer for c in cells}
    wd = {name: {c.weight_decay for c in cells if c.optimizer == name} for name in names}
    assert wd == {
        "nag": {1e-4},
        "adam": {0.0},
        "adamw": {1e-2},
        "radam": {1e-2},
        "adabelief": {1e-2},
        "proposed": {1e-2},
    }
    assert {c.lr for c in cells} == {0.1, 0.01, 0.001}
    assert {(c.model, c.recipe.epochs, c.recipe.batch_size) for c in cells} == {
        ("resnet56", 300, 128)
    }


def test_paper_table1_variants_add_one_change_each() -> None:
    spec = load_study(STUDIES / "paper_table1.yaml")
    recipes = [spec.variant_recipe(v) for v in spec.variants]
    assert list(spec.variants) == ["baseline", "cosine", "trivialaugment", "cutmix", "wd_off"]
    assert recipes[0].schedule == "step" and recipes[0].step_milestones == (150, 225)
    assert [r.schedule for r in recipes[1:]] == ["cosine"] * 4
    assert [("trivialaugment" in r.augment) for r in recipes] == [False, False, True, True, True]
    assert [r.cutmix_prob for r in recipes] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert [r.wd_off_fraction for r in recipes] == [None, None, None, None, 0.75]
    (cell,) = {(c.optimizer, c.lr, c.weight_decay) for c in spec.cells()}
    assert cell == ("nag", 0.1, 1e-4)


def test_sam_resnet20_gives_adam_twice_sams_epochs() -> None:
    cells = {c.optimizer_label: c for c in load_study(STUDIES / "sam_resnet20.yaml").cells()}
    sam, adam = cells["sam_adam"], cells["adam_2x"]
    assert sam.optimizer_kwargs == {"base": "adam", "rho": 0.05}
    assert (sam.recipe.epochs, adam.recipe.epochs) == (100, 200)
    assert sam.recipe.schedule == "plateau" and sam.recipe.plateau_factor == 0.5
    assert sam.recipe.early_stopping_patience == 10 and sam.val_fraction > 0


def test_kaggle_optimizers_use_the_blogs_learning_rates() -> None:
    cells = load_study(STUDIES / "kaggle_optimizers.yaml").cells()
    setting = {c.optimizer: (c.lr, c.weight_decay) for c in cells}
    assert setting == {
        "momentum": (0.01, 0.0),
        "adam": (0.001, 0.0),
        "adamw": (0.001, 1e-5),
        "adabound": (0.001, 0.0),
        "radam": (0.001, 0.0),
    }
    assert {(c.model, c.recipe.batch_size, c.recipe.epochs, c.recipe.augment) for c in cells} == {
        ("resnet50", 32, 50, ())
    }


def test_sam_blog_cnn_matches_the_blog_setup() -> None:
    cells = load_study(STUDIES / "sam_blog_cnn.yaml").cells()
    assert sorted(c.optimizer_label for c in cells) == [
        "adam",
        "momentum",
        "sam_adam",
        "sam_momentum",
    ]
    assert all(math.isclose(c.lr, 1e-3) and c.recipe.batch_size == 32 for c in cells)
    assert {c.recipe.epochs for c in cells} == {50} and {c.model for c in cells} == {"simple_cnn"}
