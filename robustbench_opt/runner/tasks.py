"""How a run's cells become Ray trials: alone, or packed with cells they can train beside.

Cells pack together when they differ only in lr, weight decay and seed (`TrialConfig.pack_key`:
one optimizer entry and variant). `resources.packing` in the study file (or `run --packing`):

- `off`: every cell is its own trial.
- an integer N: packs of at most N cells.
- `auto` (default): packs as large as memory allows (`memory.cells_per_pack`: weights,
  gradients, optimizer state and activations at the batch size, per cell, against one GPU's
  share on a GPU, or the available RAM per concurrent trial on CPU), at most `AUTO_MAX_CELLS`,
  and never so large that the run has fewer trials than it has slots (which would leave
  workers idle).

A group is split into packs of near-equal size, in the plan's order.
"""

from __future__ import annotations

import math

from robustbench_opt.config import TrialConfig
from robustbench_opt.spec import Resources

AUTO_MAX_CELLS = 16  # most cells `packing: auto` puts in one trial


def make_tasks(
    configs: dict[str, TrialConfig], resources: Resources, slots: int
) -> list[list[str]]:
    """The run's trials as lists of cell ids, in the plan's order."""
    groups: dict[str, list[str]] = {}
    for cell_id, config in configs.items():
        groups.setdefault(config.pack_key, []).append(cell_id)
    tasks: list[list[str]] = []
    for ids in groups.values():
        size = _pack_size(configs[ids[0]], resources, slots, len(configs))
        count = math.ceil(len(ids) / size)
        bounds = [round(k * len(ids) / count) for k in range(count + 1)]
        tasks.extend(ids[a:b] for a, b in zip(bounds, bounds[1:], strict=False))
    return tasks


def _pack_size(config: TrialConfig, resources: Resources, slots: int, cells: int) -> int:
    if resources.packing == "off":
        return 1
    if resources.packing != "auto":
        return int(resources.packing)
    from robustbench_opt.runner.memory import cells_per_pack  # imports torch

    spread = math.ceil(cells / max(1, slots))  # keep every slot busy
    return max(1, min(AUTO_MAX_CELLS, spread, cells_per_pack(config, resources, slots)))
