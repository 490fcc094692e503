"""How callers watch the trial engine (torch-free, for the runner's driver side)."""

from __future__ import annotations

from collections.abc import Callable

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult

EpochHook = Callable[[int, EpochRecord], None]  # (cell index in configs, its epoch record)
ResultHook = Callable[[int, TrialResult], None]  # (cell index in configs, its final result)
BatchHook = Callable[[int, int, int, int | None], None]  # (epoch, epochs, batch, batches or None)
# A trainer: trains a task's cells (one, or a pack), reporting each cell's epochs and result
# through the hooks (`engine.train_cells`'s signature; tests inject their own).
TrialFn = Callable[[list[TrialConfig], EpochHook, ResultHook], object]
