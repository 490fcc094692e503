"""How a run's cells become trials: alone, or packed with cells they can train beside.

Cells pack together when they differ only in lr, weight decay and seed (`TrialConfig.pack_key`:
one optimizer entry and variant). `resources.packing` in the study file (or `run --packing`):

- `off`: every cell is its own trial.
- an integer N: packs of at most N cells.
- `auto` (default): packs at most as large as memory allows (`memory.cells_per_pack`: weights,
  gradients, optimizer state and activations at the batch size, per cell, against one GPU's
  share on a GPU, or the available RAM per concurrent trial on CPU) and `AUTO_MAX_CELLS`; the
  plan then takes the pack size that finishes the run soonest on its slots (`pack_size`), from
  how much faster a pack measured than one cell alone.

A group is split into packs of near-equal size, in the plan's order.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator

from robustbench_opt.config import TrialConfig
from robustbench_opt.spec import Resources

AUTO_MAX_CELLS = 16  # most cells `packing: auto` puts in one trial


def make_tasks(
    configs: dict[str, TrialConfig], resources: Resources, slots: int, most: int | None = None
) -> list[list[str]]:
    """The run's trials as lists of cell ids, in the plan's order: each group of cells that can
    pack split into near-equal packs of at most its `pack_cap` and `most` cells."""
    tasks: list[list[str]] = []
    for ids in _groups(configs):
        size = pack_cap(configs[ids[0]], resources, slots)
        tasks.extend(_split(ids, size if most is None else min(size, most)))
    return tasks


def pack_cap(config: TrialConfig, resources: Resources, slots: int) -> int:
    """The most cells one trial of `config`'s group may hold: 1 (`off`), the study's N, or
    (`auto`) what memory allows, at most `AUTO_MAX_CELLS`."""
    if resources.packing == "off":
        return 1
    if resources.packing != "auto":
        return int(resources.packing)
    from robustbench_opt.runner.memory import cells_per_pack  # imports torch

    return max(1, min(AUTO_MAX_CELLS, cells_per_pack(config, resources, slots)))


def pack_size(
    configs: dict[str, TrialConfig],
    resources: Resources,
    slots: int,
    largest: int,
    speedup: float,
) -> int:
    """The pack size, up to `largest` (the largest pack `make_tasks` makes, each group at its
    `pack_cap`), whose tasks finish soonest on `slots` trials at once; 1 (no packs) when none
    is sooner.

    `speedup` is what a pack of `largest` cells measured: its cells per second over one cell
    alone. A step of s packed cells is modelled as a + b*s (a: the per-step work a pack does
    once, b: each cell's own), which that one measurement fixes (a + b = 1 alone). The tasks
    are handed out in plan order to the slot that frees first, each taking its cells' images x
    its step time; on a tie the larger size (fewer trials) wins.
    """
    if largest == 1 or speedup <= 1.0:
        return 1
    from robustbench_opt.runner.plan import cell_seconds  # (plan imports this module)

    # (cells, images per cell, the group's most cells per pack) per group, in plan order
    groups = [
        (len(ids), cell_seconds(configs[ids[0]], 1.0), pack_cap(configs[ids[0]], resources, slots))
        for ids in _groups(configs)
    ]
    per_cell = (largest / speedup - 1) / (largest - 1)  # b, in units of a step alone
    shared = 1 - per_cell  # a

    def finish(size: int) -> float:
        free = [0.0] * min(slots, len(configs))  # when each slot is free next
        for n, images, cap in groups:
            for pack in _sizes(n, min(size, cap)):
                heapq.heapreplace(free, free[0] + images * (shared + per_cell * pack))
        return max(free)

    return min(range(largest, 0, -1), key=finish)  # min keeps the first: the largest on a tie


def _groups(configs: dict[str, TrialConfig]) -> list[list[str]]:
    """Cell ids by `pack_key`, groups in order of their first cell, cells in plan order."""
    groups: dict[str, list[str]] = {}
    for cell_id, config in configs.items():
        groups.setdefault(config.pack_key, []).append(cell_id)
    return list(groups.values())


def _sizes(n: int, most: int) -> Iterator[int]:
    """The sizes of n cells split into near-equal packs of at most `most`, in order."""
    count = math.ceil(n / most)
    bounds = [round(k * n / count) for k in range(count + 1)]
    return (b - a for a, b in zip(bounds, bounds[1:], strict=False))


def _split(ids: list[str], most: int) -> list[list[str]]:
    out, start = [], 0
    for size in _sizes(len(ids), most):
        out.append(ids[start : start + size])
        start += size
    return out
