"""The trial contract: JSON round trips and the cell identity."""

from __future__ import annotations

import dataclasses
import json

from robustbench_opt.config import Recipe, TrialConfig


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
