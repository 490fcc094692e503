"""The stacked step of K cells equals their K torch.optim optimizers stepped one by one, in
float64, for every registry entry with a stacked rule: per-cell lr, weight decay, betas or
momentum, lr changed between steps (a schedule) and weight decay switched to 0 mid-way."""

from __future__ import annotations

import pytest
import torch

from robustbench_opt.optim import REGISTRY, build_optimizer
from robustbench_opt.optim.stacked import StackedStep

STACKED = [name for name, info in REGISTRY.items() if info.stacked is not None]
SHAPES = {"conv.weight": (4, 2, 3, 3), "conv.bias": (4,), "fc.weight": (3, 8), "fc.bias": (3,)}
# (lr, weight decay, betas or momentum) per cell
CELLS = [(1e-2, 0.0, (0.9, 0.999)), (3e-2, 1e-2, (0.8, 0.99)), (5e-3, 5e-2, (0.95, 0.9))]
STEPS = 12


def test_the_simple_update_rules_are_the_ones_with_a_stacked_step() -> None:
    assert STACKED == ["sgd", "momentum", "nag", "adam", "adamw"]


def _kwargs(name: str, hyper: tuple[float, float]) -> dict:
    if name in ("adam", "adamw"):
        return {"betas": hyper}
    return {} if name == "sgd" else {"momentum": hyper[0]}


@pytest.mark.parametrize("name", STACKED)
def test_the_stacked_step_equals_each_cells_torch_optimizer(name: str) -> None:
    k = len(CELLS)
    generator = torch.Generator().manual_seed(0)
    stacked = {
        n: torch.randn((k, *s), generator=generator, dtype=torch.float64) for n, s in SHAPES.items()
    }
    alone = [{n: t[j].clone().requires_grad_() for n, t in stacked.items()} for j in range(k)]
    named = [{n: torch.nn.Parameter(t[j].clone()) for n, t in stacked.items()} for j in range(k)]

    # two groups: weights decay, biases not (the no_norm_bias policy's shape)
    def groups(params: dict) -> list[dict]:
        return [
            {"params": [p for n, p in params.items() if n.endswith("weight")]},
            {"params": [p for n, p in params.items() if n.endswith("bias")], "weight_decay": 0.0},
        ]

    reference = [
        build_optimizer(groups(p), name, lr, wd, _kwargs(name, h)).optimizer
        for p, (lr, wd, h) in zip(alone, CELLS, strict=True)
    ]
    cells = [
        build_optimizer(groups(p), name, lr, wd, _kwargs(name, h)).optimizer
        for p, (lr, wd, h) in zip(named, CELLS, strict=True)
    ]
    step = StackedStep.of(REGISTRY[name].stacked, cells, stacked, named)
    assert step is not None
    for t in range(STEPS):
        if t == 4:  # a schedule: every cell's lr changes
            for opt in reference + cells:
                for group in opt.param_groups:
                    group["lr"] *= 0.3
        if t == 8:  # weight decay off late
            for opt in reference + cells:
                opt.param_groups[0]["weight_decay"] = 0.0
        grads = {
            n: torch.randn(t_.shape, generator=generator, dtype=torch.float64)
            for n, t_ in stacked.items()
        }
        for n, g in grads.items():
            stacked[n].grad = g
            for j in range(k):
                alone[j][n].grad = g[j].clone()
        step.step()
        for opt in reference:
            opt.step()
        for j in range(k):
            for n in SHAPES:
                torch.testing.assert_close(
                    stacked[n][j], alone[j][n].detach(), rtol=1e-13, atol=0, msg=f"{n} step {t}"
                )
    for j in range(k):  # each cell's optimizer state is its own, equal to torch's
        for n in SHAPES:
            want = reference[j].state[alone[j][n]]
            got = cells[j].state[named[j][n]]
            assert got.keys() == want.keys()
            for key in want:
                torch.testing.assert_close(
                    got[key].double(), want[key].double(), rtol=1e-13, atol=0
                )


def test_groups_the_rule_does_not_cover_step_per_cell() -> None:
    params = {"w": torch.zeros(2, 3)}
    named = [{"w": torch.nn.Parameter(torch.zeros(3))} for _ in range(2)]
    cells = [torch.optim.Adam([p["w"]], lr=1e-3, amsgrad=True) for p in named]
    assert StackedStep.of(REGISTRY["adam"].stacked, cells, params, named) is None
    nesterov = [torch.optim.SGD([named[0]["w"]], lr=0.1, momentum=0.9, nesterov=True),
                torch.optim.SGD([named[1]["w"]], lr=0.1, momentum=0.9)]  # fmt: skip
    assert StackedStep.of(REGISTRY["nag"].stacked, nesterov, params, named) is None
