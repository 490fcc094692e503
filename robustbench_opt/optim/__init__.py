"""Optimizers by name: one registry, a checked builder and a one- or two-pass step.

Momentum convention: `momentum` and `nag` use the frameworks' d <- mu d + g, theta <- theta -
lr d (torch.optim.SGD, dampening 0), not the paper's eq. 3-4 d <- mu d + (1 - mu) lr g; for a
constant lr the paper's lr equals ours / (1 - mu). See `registry` for the details.
"""

from __future__ import annotations

from robustbench_opt.optim.build import (
    BuiltOptimizer,
    build_optimizer,
    param_groups,
    set_weight_decay,
)
from robustbench_opt.optim.registry import (
    REGISTRY,
    OptimizerInfo,
    WeightDecayMode,
    get_info,
    list_optimizers,
)
from robustbench_opt.optim.step import frozen_running_stats, optimizer_step

__all__ = [
    "REGISTRY",
    "BuiltOptimizer",
    "OptimizerInfo",
    "WeightDecayMode",
    "build_optimizer",
    "frozen_running_stats",
    "get_info",
    "list_optimizers",
    "optimizer_step",
    "param_groups",
    "set_weight_decay",
]
