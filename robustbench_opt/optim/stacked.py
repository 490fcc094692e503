"""One optimizer step for K cells at once, on their stacked parameters [K, ...].

A `StackedRule` is the update of a torch.optim class (SGD with momentum / Nesterov, Adam,
AdamW) written over stacked tensors, with each cell's hyperparameters (lr, weight decay,
momentum, betas, eps) as [K, 1, ...] tensors read from that cell's optimizer `param_groups` at
every step, so schedules and weight decay switched off late apply as they do per cell (the
tensors are made anew only when a value changed: `Hyper`). The operations mirror torch's
single-tensor implementation one for one, so each cell's slice is updated as its own optimizer
would update it. Each cell's optimizer state (`step`, `exp_avg`, `exp_avg_sq`,
`momentum_buffer`) holds views of the stacked state, so it stays the cell's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Update = Callable[[Tensor, Tensor, dict[str, Tensor], "Hyper", Mapping[str, Any]], None]
Derive = Callable[[dict[str, Tensor]], Tensor]  # per-cell values -> a derived [K] value
DeriveAtStep = Callable[[dict[str, Tensor], Tensor], Tensor]  # ... and the step count [K]


class Hyper:
    """One param group's per-cell hyperparameters, as [K] float64 tensors (`values`: lr,
    weight_decay, momentum, eps, beta1, beta2), and derived from them, as a rule asks: `cell`
    gives a value as [K, 1, ...] in a parameter's dtype, `at_step` one that depends on the
    optimizer step (bias corrections). Each is computed once, not once per parameter, and kept
    until the group's values change (a new `Hyper`) or, for `at_step`, the step does."""

    def __init__(self, values: dict[str, Tensor]) -> None:
        self.values = values
        self.any_weight_decay = bool(values["weight_decay"].any())
        self.any_momentum = "momentum" in values and bool(values["momentum"].any())
        self._cells: dict[tuple[str, int, torch.dtype], Tensor] = {}
        self._step: tuple[int, ...] | None = None
        self._per_step: dict[tuple[str, int, torch.dtype], Tensor] = {}

    def cell(self, key: str, like: Tensor, derive: Derive | None = None) -> Tensor:
        """`values[key]`, or `derive(values)` (float64 [K]), as [K, 1, ...] in `like`'s dtype."""
        index = (key, like.ndim, like.dtype)
        if index not in self._cells:
            value = self.values[key] if derive is None else derive(self.values)
            self._cells[index] = _cell(value, like)
        return self._cells[index]

    def at_step(self, key: str, step: Tensor, like: Tensor, derive: DeriveAtStep) -> Tensor:
        """`derive(values, step as float64 [K])` as [K, 1, ...] in `like`'s dtype, for this
        step's count."""
        now = tuple(step.tolist())
        if now != self._step:
            self._step, self._per_step = now, {}
        index = (key, like.ndim, like.dtype)
        if index not in self._per_step:
            self._per_step[index] = _cell(derive(self.values, step.to(torch.float64)), like)
        return self._per_step[index]


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
    if hyper.any_weight_decay:
        grad = grad.addcmul(param, hyper.cell("weight_decay", param))
    if hyper.any_momentum:
        momentum = hyper.cell("momentum", param)
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = state["momentum_buffer"] = grad.detach().clone()
        else:
            buf.mul_(momentum).add_(grad)
        grad = grad.addcmul(buf, momentum) if flags["nesterov"] else buf
    param.addcmul_(grad, hyper.cell("neg_lr", param, lambda v: -v["lr"]))


def _adam(param: Tensor, grad: Tensor, state: dict, hyper: Hyper, flags: Mapping) -> None:
    if "step" not in state:
        state["step"] = torch.zeros(param.shape[0], dtype=_STEP_DTYPE)
        state["exp_avg"] = torch.zeros_like(param)
        state["exp_avg_sq"] = torch.zeros_like(param)
    step = state["step"]
    step += 1
    if hyper.any_weight_decay:
        if flags["decoupled_weight_decay"]:
            param.mul_(hyper.cell("decay", param, lambda v: 1 - v["lr"] * v["weight_decay"]))
        else:
            grad = grad.addcmul(param, hyper.cell("weight_decay", param))
    state["exp_avg"].lerp_(grad, hyper.cell("1-beta1", param, lambda v: 1 - v["beta1"]))
    one_minus_beta2 = hyper.cell("1-beta2", param, lambda v: 1 - v["beta2"])
    state["exp_avg_sq"].mul_(hyper.cell("beta2", param)).addcmul_(grad * one_minus_beta2, grad)
    bias_correction2_sqrt = hyper.at_step(
        "bias_correction2_sqrt", step, param, lambda v, s: (1 - v["beta2"] ** s) ** 0.5
    )
    denom = (state["exp_avg_sq"].sqrt() / bias_correction2_sqrt).add_(hyper.cell("eps", param))
    neg_step_size = hyper.at_step(
        "neg_step_size", step, param, lambda v, s: -(v["lr"] / (1 - v["beta1"] ** s))
    )
    param.addcmul_(state["exp_avg"] / denom, neg_step_size)


def _cell(values: Tensor, like: Tensor) -> Tensor:
    """[K] values as [K, 1, ...] in `like`'s dtype."""
    return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


_STEP_DTYPE = torch.tensor(0.0).dtype  # torch's float step counter's dtype


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
        self.state: dict[str, dict[str, Tensor]] = {}
        self._hypers: dict[int, tuple[dict[str, tuple[float, ...]], Hyper]] = {}
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
                state, g = self.state[name], self.group_of[name]
                keys = set(state)
                self.rule.update(param, param.grad, state, hypers[g], self.flags[g])
                if set(state) != keys:
                    self._share(name)

    def _hyper(self, g: int) -> Hyper:
        """Group `g`'s per-cell hyperparameters now: the last step's `Hyper` while every cell's
        values are unchanged (a schedule changes them once an epoch), else a new one."""
        groups = [opt.param_groups[g] for opt in self.optimizers]
        values = {
            k: tuple(float(group[k]) for group in groups)
            for k in self.rule.per_cell
            if k in groups[0]
        }
        if "betas" in groups[0]:
            values["beta1"] = tuple(float(group["betas"][0]) for group in groups)
            values["beta2"] = tuple(float(group["betas"][1]) for group in groups)
        last = self._hypers.get(g)
        if last is None or last[0] != values:
            tensors = {k: torch.tensor(v, dtype=torch.float64) for k, v in values.items()}
            self._hypers[g] = (values, Hyper(tensors))
        return self._hypers[g][1]

    def _share(self, name: str) -> None:
        """Each cell's optimizer state for `name`: views of its slice of the stacked state."""
        state = self.state[name]
        if state:
            for k, opt in enumerate(self.optimizers):
                opt.state[self.named[k][name]] = {key: t[k] for key, t in state.items()}
