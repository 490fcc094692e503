"""A trial's memory rule: GPU fraction from model size, activations and batch size."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robustbench_opt.config import Recipe, TrialConfig
from robustbench_opt.datasets import REGISTRY
from robustbench_opt.errors import UserError
from robustbench_opt.models import build_model
from robustbench_opt.runner import memory
from robustbench_opt.runner.memory import (
    MAX_TRIALS_PER_GPU,
    REFERENCE_GPU_BYTES,
    SATURATING_WORK,
    estimate,
    footprint,
    gpu_fraction,
)


def _config(model: str, dataset: str = "cifar10", batch: int = 128) -> TrialConfig:
    return TrialConfig(dataset, model, "adam", 1e-3, 0.0, recipe=Recipe(batch_size=batch))


def test_footprint_counts_parameters_and_every_leaf_output():
    size = footprint("simple_cnn", "digits")
    assert size.params == sum(
        p.numel() for p in build_model("simple_cnn", 10, (1, 8, 8)).parameters()
    )
    # conv 32x8x8, relu, pool 32x4x4, conv 64x4x4, relu, pool 64x2x2, flatten, fc 128, relu, fc 10
    conv1, pool1, conv2, pool2 = 32 * 64, 32 * 16, 64 * 16, 64 * 4
    assert size.activations == 2 * conv1 + pool1 + 2 * conv2 + 2 * pool2 + 2 * 128 + 10


def test_memory_sizing_reads_the_dataset_registry(monkeypatch):
    """An entry with twice digits' training images costs their bytes more; one with 3 classes
    has a classifier 7 outputs narrower (128 inputs + bias each)."""
    digits = REGISTRY["digits"]
    monkeypatch.setitem(REGISTRY, "digits_x2", dataclasses.replace(digits, train_size=2 * 1438))
    monkeypatch.setitem(REGISTRY, "digits_3", dataclasses.replace(digits, num_classes=3))
    base = estimate(_config("simple_cnn", "digits", 64))
    doubled = estimate(_config("simple_cnn", "digits_x2", 64))
    assert doubled.memory_bytes - base.memory_bytes == 1438 * 1 * 8 * 8
    assert doubled.footprint == base.footprint
    narrow = footprint("simple_cnn", "digits_3")
    assert base.footprint.params - narrow.params == 7 * (128 + 1)
    assert base.footprint.activations - narrow.activations == 7


def test_small_trials_share_a_gpu_and_large_ones_take_it_whole():
    assert gpu_fraction(_config("simple_cnn", "digits", 64)) == 1 / MAX_TRIALS_PER_GPU
    assert gpu_fraction(_config("resnet20")) == 0.25
    for model in ("resnet18", "resnet34", "resnet50", "wrn28_10"):
        assert gpu_fraction(_config(model)) == 1.0, model


def test_fraction_follows_the_rule_and_never_shrinks_with_batch_size():
    previous = 0.0
    for batch in (16, 64, 256, 1024, 4096):
        result = estimate(_config("resnet20", batch=batch))
        k = result.trials_per_gpu
        assert k in (1, 2, 4, 8) and result.fraction == 1 / k
        fits = k * result.step_work <= SATURATING_WORK
        fits = fits and k * result.memory_bytes <= REFERENCE_GPU_BYTES
        assert fits or k == 1
        if k < MAX_TRIALS_PER_GPU:  # k is the largest power of two that fits
            doubled = 2 * k * result.step_work <= SATURATING_WORK
            assert not (doubled and 2 * k * result.memory_bytes <= REFERENCE_GPU_BYTES)
        assert result.fraction >= previous
        previous = result.fraction


def test_unknown_dataset_is_a_user_error():
    with pytest.raises(UserError, match="unknown dataset 'cifar11'.*did you mean 'cifar10'"):
        gpu_fraction(_config("resnet20", "cifar11"))


def test_estimate_builds_its_model_on_the_meta_device_only(monkeypatch):
    """wrn28_10 (36.5M parameters) is measured without memory: every parameter and buffer of
    the model the estimate builds is a meta tensor, and no CUDA memory is taken."""
    built = []

    def recording(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(memory, "build_model", recording)
    memory.footprint.cache_clear()  # measured afresh, not from an earlier test's cache
    before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    result = estimate(_config("wrn28_10"))
    after = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    [net] = built
    tensors = [*net.parameters(), *net.buffers()]
    assert result.footprint.params == sum(p.numel() for p in net.parameters()) > 36_000_000
    assert tensors and all(t.is_meta for t in tensors)
    assert after == before
