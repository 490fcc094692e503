"""The dataset registry: lookups, derived facts, and that reading it needs no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robustbench_opt.datasets import REGISTRY, check_augmentation, dataset_info
from robustbench_opt.errors import UserError


def test_importing_the_registry_and_the_analysis_does_not_import_torch() -> None:
    code = (
        "import sys, robustbench_opt.datasets, robustbench_opt.analysis; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_an_unknown_name_is_a_one_line_error_with_the_closest_and_every_name() -> None:
    with pytest.raises(UserError) as info:
        dataset_info("cifar-10")
    message = str(info.value)
    assert message.startswith("unknown dataset 'cifar-10'; did you mean 'cifar10'? ")
    assert "valid: cifar10, cifar100, digits, mnist1d, mnist5k" in message and "\n" not in message


def test_chance_is_one_over_the_classes_and_shapes_give_channels_and_sizes() -> None:
    assert [(name, info.chance) for name, info in REGISTRY.items()] == [
        ("digits", 0.1), ("mnist5k", 0.1), ("mnist1d", 0.1), ("cifar10", 0.1), ("cifar100", 0.01)
    ]  # fmt: skip
    cifar = dataset_info("cifar10")
    assert (cifar.in_channels, cifar.is_image, cifar.example_size) == (3, True, 3 * 32 * 32)
    sequence = dataset_info("mnist1d")
    assert (sequence.in_channels, sequence.is_image, sequence.example_size) == (1, False, 40)


def test_entries_are_frozen_and_name_readers_that_exist() -> None:
    info = dataset_info("digits")
    with pytest.raises(AttributeError):
        info.num_classes = 3  # type: ignore[misc]
    for entry in REGISTRY.values():
        reader = entry.reader()
        assert callable(reader.read)
        assert entry.embedded or callable(reader.check), entry.name


def test_sequences_refuse_image_augmentation_in_one_line_and_images_take_it() -> None:
    check_augmentation("cifar10", (3, 32, 32), ("crop_flip", "trivialaugment"), 0.5)
    check_augmentation("mnist1d", (1, 40), (), 0.0)
    for augment, cutmix in ((("crop_flip",), 0.0), ((), 0.5)):
        with pytest.raises(UserError) as info:
            check_augmentation("mnist1d", (1, 40), augment, cutmix)
        message = str(info.value)
        assert "mnist1d's examples have shape (1, 40)" in message and "\n" not in message
        assert "set augment: [] and cutmix_prob: 0" in message
