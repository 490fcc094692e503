"""optimizer_step: the two-pass SAM step with BatchNorm, shared param groups, one-pass steps."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from robustbench_opt.optim import (
    build_optimizer,
    frozen_running_stats,
    optimizer_step,
    set_weight_decay,
)

LR, WD, RHO = 0.1, 0.01, 0.2


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(16, 4, generator=gen, dtype=torch.float64), torch.arange(16) % 3


def _loss(model: nn.Module, seed: int) -> torch.Tensor:
    x, y = _batch(seed)
    return nn.functional.cross_entropy(model(x), y)


def _grads(model: nn.Module, seed: int) -> list[torch.Tensor]:
    model.zero_grad()
    _loss(model, seed).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_sam_updates_batchnorm_statistics_once_per_step() -> None:
    model = _net()
    built = build_optimizer(model.parameters(), "sam", LR, WD, {"base": "sgd", "rho": RHO})
    bn = model[1]
    for step in (1, 2):
        once = copy.deepcopy(model)
        _loss(once, step)  # one training-mode forward at the pre-step weights
        optimizer_step(model, built, lambda step=step: _loss(model, step))
        assert int(bn.num_batches_tracked) == step
        torch.testing.assert_close(bn.running_mean, once[1].running_mean, rtol=0, atol=0)
        torch.testing.assert_close(bn.running_var, once[1].running_var, rtol=0, atol=0)
        assert bn.track_running_stats


def test_sam_second_pass_uses_batch_statistics_at_the_perturbed_weights() -> None:
    model = _net()
    reference = copy.deepcopy(model)
    built = build_optimizer(model.parameters(), "sam", LR, WD, {"base": "sgd", "rho": RHO})
    loss = optimizer_step(model, built, lambda: _loss(model, 0))

    w = [p.detach().clone() for p in reference.parameters()]
    g = _grads(reference, 0)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(reference.parameters(), g, strict=True):
            p.add_(RHO * gi / norm)
    g_at_e = _grads(reference, 0)  # training mode: batch statistics
    expected = [wi - LR * (gi + WD * wi) for wi, gi in zip(w, g_at_e, strict=True)]
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.detach(), e, rtol=1e-6, atol=1e-9)  # float32 ||g|| upstream
    torch.testing.assert_close(loss, _loss(copy.deepcopy(_net()), 0).detach())
    assert not loss.requires_grad


def test_one_pass_step_equals_a_manual_step() -> None:
    model, manual = _net(), _net()
    built = build_optimizer(model.parameters(), "adam", LR, WD)
    reference = torch.optim.Adam(manual.parameters(), lr=LR, weight_decay=WD)
    for seed in range(3):
        loss = optimizer_step(model, built, lambda seed=seed: _loss(model, seed))
        reference.zero_grad()
        expected = _loss(manual, seed)
        expected.backward()
        reference.step()
        torch.testing.assert_close(loss, expected.detach(), rtol=0, atol=0)
    for p, q in zip(model.parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_sam_shares_param_groups_with_its_base_for_schedules_and_weight_decay() -> None:
    model = _net()
    built = build_optimizer(model.parameters(), "sam", LR, WD, {"base": "adamw"})
    base = built.optimizer.base_optimizer
    assert base.param_groups is built.optimizer.param_groups
    schedule = torch.optim.lr_scheduler.StepLR(built.optimizer, step_size=1, gamma=0.5)
    optimizer_step(model, built, lambda: _loss(model, 0))
    schedule.step()
    set_weight_decay(built, 0.0)
    assert base.param_groups[0]["lr"] == pytest.approx(LR / 2, rel=1e-15)
    assert base.param_groups[0]["weight_decay"] == 0.0
    assert built.info.weight_decay_mode == "decoupled"  # the base's mode


def test_frozen_running_stats_restores_tracking_after_an_error() -> None:
    model = _net()
    with pytest.raises(RuntimeError), frozen_running_stats(model):
        assert not model[1].track_running_stats
        raise RuntimeError("boom")
    assert model[1].track_running_stats


def test_sam_counts_batchnorm_once_per_step_through_a_compiled_forward() -> None:
    """torch.compile must see the frozen statistics (dynamo guards the flag, recompiles once)."""
    model = _net()
    forward = torch.compile(model, backend="eager")
    built = build_optimizer(model.parameters(), "sam", LR, WD, {"base": "sgd"})
    x, y = _batch(0)
    for _ in range(3):
        optimizer_step(model, built, lambda: nn.functional.cross_entropy(forward(x), y))
    assert int(model[1].num_batches_tracked) == 3
