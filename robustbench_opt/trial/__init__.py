"""The trial engine: trains a list of cells (one cell, or a pack that trains as one)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult

EpochHook = Callable[[int, EpochRecord], None]  # (cell index in configs, its epoch record)
ResultHook = Callable[[int, TrialResult], None]  # (cell index in configs, its final result)


def train_cells(
    configs: Sequence[TrialConfig],
    on_epoch: EpochHook | None = None,
    on_result: ResultHook | None = None,
) -> list[TrialResult]:
    """Trains `configs` (cells that may differ only in lr, weight decay and seed) and returns
    their results in order; `on_epoch(k, record)` after each epoch of cell k, `on_result(k,
    result)` as soon as cell k is final."""
    if len(configs) > 1:
        from robustbench_opt.packed import run_packed

        return run_packed(configs, on_epoch, on_result)
    from robustbench_opt.train import run_trial

    [config] = configs
    result = run_trial(config, None if on_epoch is None else lambda r: on_epoch(0, r))
    if on_result is not None:
        on_result(0, result)
    return [result]
