"""The trial contract: JSON round trips and the cell identity."""

from __future__ import annotations

import dataclasses
import json

import pytest

from robustbench_opt.config import (
    RECIPE_RULES,
    SPEED_SWITCHES,
    Recipe,
    TrialConfig,
    check_recipe,
)
from robustbench_opt.errors import UserError


def _config(**changes: object) -> TrialConfig:
    base = TrialConfig(
        dataset="cifar10",
        model="resnet20",
        optimizer="sam",
        lr=0.1,
        weight_decay=5e-4,
        recipe=Recipe(epochs=3, augment=("crop_flip",), step_milestones=(1, 2)),
        optimizer_kwargs={"base": "adam", "betas": [0.9, 0.99]},
        data_dir="/data/cifar10",
    )
    return dataclasses.replace(base, **changes)


def test_config_survives_a_json_round_trip() -> None:
    config = _config()
    assert TrialConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cell_id_ignores_device_and_data_location() -> None:
    config = _config()
    moved = _config(data_dir="/elsewhere", download=True, device="cuda:1")
    assert moved.cell_id("s") == config.cell_id("s")


def test_cell_id_changes_with_anything_that_changes_what_is_measured() -> None:
    config = _config()
    changed = [
        _config(lr=0.01),
        _config(weight_decay=0.0),
        _config(seed=1),
        _config(variant="cutmix"),
        _config(label="sam_adam"),
        _config(optimizer_kwargs={"base": "adam", "betas": [0.9, 0.999]}),
        _config(recipe=Recipe(epochs=4, augment=("crop_flip",), step_milestones=(1, 2))),
        _config(val_fraction=0.1),
    ]
    ids = {c.cell_id("s") for c in changed}
    assert config.cell_id("s") not in ids and len(ids) == len(changed)
    assert config.cell_id("other") != config.cell_id("s")


def test_speed_switches_are_not_identity_so_toggling_compile_keeps_the_cell() -> None:
    config = _config()
    for switch in SPEED_SWITCHES:
        assert switch in Recipe.__dataclass_fields__
    faster = _config(
        recipe=dataclasses.replace(
            config.recipe, compile=True, channels_last=True, data_on_device=False
        )
    )
    assert faster.cell_id("s") == config.cell_id("s")
    assert _config(recipe=dataclasses.replace(config.recipe, compile=True)).cell_id(
        "s"
    ) == config.cell_id("s")


def test_bf16_and_the_weight_decay_policy_are_identity() -> None:
    config = _config()
    bf16 = _config(recipe=dataclasses.replace(config.recipe, amp_bf16=True))
    no_norm = _config(recipe=dataclasses.replace(config.recipe, weight_decay_params="no_norm_bias"))
    assert len({config.cell_id("s"), bf16.cell_id("s"), no_norm.cell_id("s")}) == 3


def test_cells_stored_before_the_identity_rules_keep_their_id() -> None:
    """The id this default cell had before speed switches and weight_decay_params existed in
    the identity rule (computed with the previous config.py), so stored studies resume."""
    config = TrialConfig(
        dataset="digits", model="simple_cnn", optimizer="adam", lr=1e-3, weight_decay=0.0
    )
    assert config.cell_id("s") == "677d2244717c0893"


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"epochs": 0}, "recipe.epochs: must be an integer >= 1, got 0"),
        ({"schedule": "linear"}, "recipe.schedule: unknown schedule 'linear'"),
        ({"augment": ("crop", "mixup")}, "recipe.augment[1]: unknown augmentation 'mixup'"),
        ({"plateau_factor": 1.5}, "recipe.plateau_factor: must be a number in (0, 1), got 1.5"),
        ({"weight_decay_params": "some"}, "recipe.weight_decay_params: unknown"),
    ],
)
def test_check_recipe_names_the_setting_not_a_flag(change: dict, needle: str) -> None:
    with pytest.raises(UserError) as err:
        check_recipe(dataclasses.replace(Recipe(), **change))
    assert needle in str(err.value) and "--" not in str(err.value)


def test_every_rule_accepts_its_field_default() -> None:
    for name, rule in RECIPE_RULES.items():
        assert rule.violation(getattr(Recipe(), name)) is None, name
