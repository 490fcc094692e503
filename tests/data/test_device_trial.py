"""A trial on the device path learns as well as on the torchvision DataLoader path (digits)."""

from __future__ import annotations

import statistics

import pytest

from robustbench_opt.config import Recipe, TrialConfig
from robustbench_opt.trial.engine import run_trial

SEEDS = (0, 1, 2)


def _accuracies(data_on_device: bool, cutmix_prob: float) -> list[float]:
    recipe = Recipe(
        epochs=8,
        batch_size=32,
        schedule="cosine",
        augment=("crop_flip",),
        cutmix_prob=cutmix_prob,
        data_on_device=data_on_device,
    )
    results = []
    for seed in SEEDS:
        config = TrialConfig(
            dataset="digits",
            model="simple_cnn",
            optimizer="adam",
            lr=3e-3,
            weight_decay=0.0,
            recipe=recipe,
            seed=seed,
            device="cpu",
        )
        results.append(run_trial(config).final_test_acc)
    return results


@pytest.mark.slow
@pytest.mark.usefixtures("float64")  # the same accuracies on every machine (tests/conftest.py)
@pytest.mark.parametrize("cutmix_prob", [0.0, 1.0])
def test_device_path_reaches_dataloader_accuracy_within_seed_noise(cutmix_prob):
    ours, theirs = _accuracies(True, cutmix_prob), _accuracies(False, cutmix_prob)
    gap = abs(statistics.mean(ours) - statistics.mean(theirs))
    spread = max(statistics.stdev(ours), statistics.stdev(theirs))
    assert min(ours + theirs) > 0.6  # both learn: chance is 0.10
    # Means differ by less than a seed's spread (with a floor of one test image in 360).
    assert gap <= max(2 * spread, 1 / 360), (ours, theirs)
