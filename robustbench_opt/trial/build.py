"""One builder of what cells train: seeded models, weight-decay parameter groups, optimizers.

The trainer, the planner's calibration and `bench` all build through `build_cells`, so what
they time is what a trial trains (the `weight_decay_params` policy included).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from robustbench_opt.config import TrialConfig
from robustbench_opt.models import build_model
from robustbench_opt.optim import BuiltOptimizer, build_optimizer, param_groups

LR_SPREAD = (1.0, 2.0, 0.5)  # cell i of a benchmarked pack trains at lr * LR_SPREAD[i % 3]


@dataclass
class BuiltCell:
    """A cell's model (on its device) and optimizer, as its trial starts."""

    config: TrialConfig
    model: nn.Module
    optimizer: BuiltOptimizer
    n_params: int


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (every device) so a CPU trial is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_cells(
    configs: Sequence[TrialConfig],
    num_classes: int,
    input_shape: tuple[int, ...],
    device: torch.device,
) -> list[BuiltCell]:
    """Each config's model, seeded with its own seed (`seed_everything`, then `build_model`:
    the same initial weights alone or in a pack), moved to `device`, and its registry optimizer
    over the parameter groups of its recipe's `weight_decay_params` policy."""
    cells = []
    for config in configs:
        seed_everything(config.seed)
        model = build_model(config.model, num_classes, input_shape)
        n_params = sum(p.numel() for p in model.parameters())
        model = model.to(device)
        built = build_optimizer(
            param_groups(model, config.recipe.weight_decay_params),
            config.optimizer,
            config.lr,
            config.weight_decay,
            config.optimizer_kwargs,
        )
        cells.append(BuiltCell(config, model, built, n_params))
    return cells


def pack_configs(config: TrialConfig, cells: int) -> list[TrialConfig]:
    """Cells for a benchmark or a calibration of packs: lr * LR_SPREAD[i % 3], seed + i."""
    return [
        replace(config, lr=config.lr * LR_SPREAD[i % len(LR_SPREAD)], seed=config.seed + i)
        for i in range(cells)
    ]
