"""Weight decay acts on every registry optimizer in exactly the mode its entry declares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_opt.errors import UserError
from robustbench_opt.optim import (
    REGISTRY,
    build_optimizer,
    get_info,
    param_groups,
    set_weight_decay,
)

LR, WD, N_STEPS = 0.05, 0.3, 4
ONE_PASS = [name for name, info in REGISTRY.items() if not info.two_pass]


def _setup(name: str, wd: float) -> tuple[nn.Parameter, torch.optim.Optimizer]:
    p = nn.Parameter(torch.tensor([0.8, -1.3, 0.05, 2.0], dtype=torch.float64))
    return p, build_optimizer([p], name, LR, wd).optimizer


def _grads() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(N_STEPS, 4, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("name", ONE_PASS)
def test_weight_decay_acts_in_the_declared_mode(name: str) -> None:
    mode = get_info(name).weight_decay_mode
    (a, with_wd), (b, without) = _setup(name, WD), _setup(name, 0.0)
    for g in _grads():
        before = a.detach().clone()
        a.grad = g.clone()
        with_wd.step()
        with torch.no_grad():
            if mode == "l2":  # lambda theta enters the gradient, and so the moments
                b.copy_(before)
                b.grad = g + WD * before
            else:  # theta is shrunk outside the adaptive step, which sees the plain gradient
                factor = 1 - LR * WD if mode == "decoupled" else 1 - WD
                b.copy_(before * factor)
                b.grad = g.clone()
        without.step()
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ONE_PASS)
def test_weight_decay_changes_the_trajectory(name: str) -> None:
    (a, with_wd), (b, without) = _setup(name, WD), _setup(name, 0.0)
    for g in _grads():
        a.grad, b.grad = g.clone(), g.clone()
        with_wd.step()
        without.step()
    assert (a - b).abs().max() > 1e-3


def test_set_weight_decay_switches_decay_off_on_every_group() -> None:
    p, q = (nn.Parameter(torch.ones(2, dtype=torch.float64)) for _ in range(2))
    built = build_optimizer([{"params": [p]}, {"params": [q]}], "adamw", LR, WD)
    set_weight_decay(built, 0.0)
    assert [g["weight_decay"] for g in built.optimizer.param_groups] == [0.0, 0.0]
    p.grad, q.grad = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    built.optimizer.step()  # zero gradient and no decay: nothing moves
    assert torch.equal(p.detach(), torch.ones(2, dtype=torch.float64))


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()


@pytest.mark.parametrize("policy", ["all", "no_norm_bias"])
def test_weight_decay_params_policy_decays_exactly_the_chosen_tensors(policy: str) -> None:
    """Zero gradients, so an SGD step is pure L2 decay: theta <- theta (1 - lr wd) for decayed
    tensors, unchanged for the rest (BatchNorm weight and bias, every Linear bias)."""
    net = _bn_net()
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    built = build_optimizer(param_groups(net, policy), "sgd", LR, WD)
    for _ in range(2):  # the second step after the wd switch-off and back checks set_weight_decay
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
        built.optimizer.step()
        set_weight_decay(built, WD)
    for name, p in net.named_parameters():
        decayed = policy == "all" or p.ndim >= 2
        factor = (1 - LR * WD) ** 2 if decayed else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=1e-12, atol=0)
    assert {n for n, p in net.named_parameters() if p.ndim < 2} == {
        "0.bias",
        "1.weight",
        "1.bias",
        "2.bias",
    }


def test_unknown_weight_decay_params_policy_names_the_setting() -> None:
    with pytest.raises(
        UserError, match="'norms'; valid: all, no_norm_bias; set weight_decay_params"
    ):
        param_groups(_bn_net(), "norms")
