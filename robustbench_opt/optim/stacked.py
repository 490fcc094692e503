"""One optimizer step for K cells at once, on their stacked parameters [K, ...].

A `StackedRule` is the update of a torch.optim class (SGD with momentum / Nesterov, Adam,
AdamW) written over stacked tensors, with each cell's hyperparameters (lr, weight decay,
momentum, betas, eps) as [K, 1, ...] tensors read from that cell's optimizer `param_groups` at
every step, so schedules and weight decay switched off late apply as they do per cell. The
operations mirror torch's single-tensor implementation one for one, so each cell's slice is
updated as its own optimizer would update it. Each cell's optimizer state (`step`, `exp_avg`,
`exp_avg_sq`, `momentum_buffer`) holds views of the stacked state, so it stays the cell's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Hyper = dict[str, Tensor]  # per-cell hyperparameters as [K, 1, ...] tensors, and "step"
Update = Callable[[Tensor, Tensor, dict[str, Tensor], Hyper, Mapping[str, Any]], None]


@dataclass(frozen=True)
class StackedRule:
    """An update over stacked tensors: `update(param, grad, state, hyper, flags)`.

    `per_cell`: group keys read per cell as tensors; `flags`: group keys that must be equal
    in every cell (passed as `flags`); `requires`: group values the rule assumes (anything else,
    e.g. amsgrad on, steps per cell instead)."""

    update: Update
    per_cell: tuple[str, ...]
    flags: tuple[str, ...]
    requires: Mapping[str, Any]


def _sgd(param: Tensor, grad: Tensor, state: dict, hyper: Hyper, flags: Mapping) -> None:
    if hyper["any_weight_decay"]:
        grad = grad.addcmul(param, hyper["weight_decay"])
    if hyper["any_momentum"]:
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = grad.detach().clone()
        else:
            buf.mul_(hyper["momentum"]).add_(grad)
        grad = grad.addcmul(buf, hyper["momentum"]) if flags["nesterov"] else buf
    param.addcmul_(grad, hyper["neg_lr"])


def _adam(param: Tensor, grad: Tensor, state: dict, hyper: Hyper, flags: Mapping) -> None:
    if "step" not in state:
        state["step"] = torch.zeros(param.shape[0], dtype=hyper["step_dtype"])
        state["exp_avg"] = torch.zeros_like(param)
        state["exp_avg_sq"] = torch.zeros_like(param)
    step = state["step"]
    step += 1
    if hyper["any_weight_decay"]:
        if flags["decoupled_weight_decay"]:
            param.mul_(_cell(1 - hyper["lr64"] * hyper["wd64"], param))
        else:
            grad = grad.addcmul(param, hyper["weight_decay"])
    beta1, beta2 = hyper["beta1_64"], hyper["beta2_64"]
    state["exp_avg"].lerp_(grad, _cell(1 - beta1, param))
    state["exp_avg_sq"].mul_(hyper["beta2"]).addcmul_(grad * _cell(1 - beta2, param), grad)
    s = step.to(torch.float64)
    step_size = hyper["lr64"] / (1 - beta1**s)
    bias_correction2_sqrt = (1 - beta2**s) ** 0.5
    denom = (state["exp_avg_sq"].sqrt() / _cell(bias_correction2_sqrt, param)).add_(hyper["eps"])
    param.addcmul_(state["exp_avg"] / denom, _cell(-step_size, param))


def _cell(values: Tensor, like: Tensor) -> Tensor:
    """[K] values as [K, 1, ...] in `like`'s dtype."""
    return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


SGD = StackedRule(
    _sgd,
    per_cell=("lr", "weight_decay", "momentum"),
    flags=("nesterov",),
    requires={"dampening": 0, "maximize": False, "differentiable": False},
)
ADAM = StackedRule(
    _adam,
    per_cell=("lr", "weight_decay", "eps"),
    flags=("decoupled_weight_decay",),
    requires={"amsgrad": False, "maximize": False, "capturable": False, "differentiable": False},
)


class StackedStep:
    """Steps K cells' optimizers of one `StackedRule` as one, on stacked parameters.

    `params[name]` is the stack [K, ...] whose slice k is the parameter `named[k][name]` of
    cell k's `optimizers[k]`; each step reads the stacked `.grad`. `of` returns None where the
    optimizers' groups do not fit the rule (the caller then steps each cell).
    """

    def __init__(
        self,
        rule: StackedRule,
        optimizers: Sequence[torch.optim.Optimizer],
        params: Mapping[str, Tensor],
        named: Sequence[Mapping[str, Tensor]],
    ) -> None:
        self.rule, self.optimizers, self.params, self.named = rule, optimizers, params, named
        first = optimizers[0]
        where = {id(p): g for g, group in enumerate(first.param_groups) for p in group["params"]}
        self.group_of = {name: where[id(p)] for name, p in named[0].items()}
        self.flags = [{f: group[f] for f in rule.flags} for group in first.param_groups]
        self.step_dtype = torch.tensor(0.0).dtype  # torch's float step counter's dtype
        self.state: dict[str, dict[str, Tensor]] = {}
        for name in params:  # the cells' own state, once they have stepped (cells left)
            cells = [opt.state.get(named[k][name], {}) for k, opt in enumerate(optimizers)]
            self.state[name] = {key: torch.stack([c[key] for c in cells]) for key in cells[0]}
            self._share(name)

    @classmethod
    def of(
        cls,
        rule: StackedRule | None,
        optimizers: Sequence[torch.optim.Optimizer],
        params: Mapping[str, Tensor],
        named: Sequence[Mapping[str, Tensor]],
    ) -> StackedStep | None:
        if rule is None:
            return None
        groups = [opt.param_groups for opt in optimizers]
        if any(len(g) != len(groups[0]) for g in groups):
            return None
        for per_group in zip(*groups, strict=True):
            for group in per_group:
                if any(group.get(k, v) != v for k, v in rule.requires.items()):
                    return None
                if any(group.get(f) != per_group[0].get(f) for f in rule.flags):
                    return None
        return cls(rule, optimizers, params, named)

    def step(self) -> None:
        """One step of every cell, with the hyperparameters its param groups hold now."""
        hypers = [self._hyper(g) for g in range(len(self.flags))]
        with torch.no_grad():
            for name, param in self.params.items():
                if param.grad is None:  # as torch.optim: a parameter without gradient waits
                    continue
                state = self.state[name]
                keys = set(state)
                hyper = {
                    k: _cell(v, param) if isinstance(v, Tensor) and not k.endswith("64") else v
                    for k, v in hypers[self.group_of[name]].items()
                }
                self.rule.update(param, param.grad, state, hyper, self.flags[self.group_of[name]])
                if set(state) != keys:
                    self._share(name)

    def _hyper(self, g: int) -> dict[str, Any]:
        """Group `g`'s per-cell hyperparameters as [K] float64 tensors (keys ending in 64 stay
        so; the others become [K, 1, ...] in the parameter's dtype), and what the rule skips."""
        groups = [opt.param_groups[g] for opt in self.optimizers]
        hyper: dict[str, Any] = {
            k: torch.tensor([float(group[k]) for group in groups], dtype=torch.float64)
            for k in self.rule.per_cell
            if k in groups[0]
        }
        if "betas" in groups[0]:
            betas = torch.tensor([group["betas"] for group in groups], dtype=torch.float64)
            hyper["beta1_64"], hyper["beta2_64"], hyper["beta2"] = (
                betas[:, 0],
                betas[:, 1],
                betas[:, 1],
            )
        hyper["lr64"], hyper["wd64"], hyper["neg_lr"] = (
            hyper["lr"],
            hyper["weight_decay"],
            -hyper["lr"],
        )
        hyper["any_weight_decay"] = bool(hyper["weight_decay"].any())
        hyper["any_momentum"] = "momentum" in hyper and bool(hyper["momentum"].any())
        hyper["step_dtype"] = self.step_dtype
        return hyper

    def _share(self, name: str) -> None:
        """Each cell's optimizer state for `name`: views of its slice of the stacked state."""
        state = self.state[name]
        if state:
            for k, opt in enumerate(self.optimizers):
                opt.state[self.named[k][name]] = {key: t[k] for key, t in state.items()}
