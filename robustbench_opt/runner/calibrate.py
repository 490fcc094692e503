"""The plan's timed figures on this machine: seconds per trained image of a config's kind,
alone or packed (the cost calibration and `packing: auto`'s probe) and on 1, 2, 4, ... torch
threads (`resources.cpus: auto`), from a few real training steps on random images."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable

from robustbench_opt.config import TrialConfig
from robustbench_opt.datasets import dataset_info

CALIBRATION_STEPS = 3  # timed training steps (at least; after one warm-up) when nothing is measured
CALIBRATION_SECONDS = 0.5  # ... and more steps while their total stays under this
MAX_CALIBRATION_STEPS = 50
PACK_PAYS = 1.0  # `packing: auto` packs when a pack trains at least this x the cells per second

# (config, steps, cells) -> seconds per trained image and cell, for `cells` packed cells (1: a
# trial of its own), timed on this machine; tests inject their own
StepTimer = Callable[[TrialConfig, int, int], float]

# (config, threads) -> seconds per trained image on that many torch threads; tests inject one
ThreadTimer = Callable[[TrialConfig, int], float]


def time_training_images(
    config: TrialConfig, steps: int, cells: int = 1, threads: int = 1
) -> float:
    """Seconds per trained image and cell on this machine: the median of at least `steps` timed
    training steps (after one warm-up; more while under `CALIBRATION_SECONDS`) of `cells` cells
    of the config's kind, built and stepped as a trial builds and steps them (`build_cells`;
    one `Pack` when more than one, else the cell's own module with its memory format and
    autocast; not compiled), on random images of its data set's shape, on `threads` CPU
    threads (default one, as a 1-CPU trial)."""
    import torch

    from robustbench_opt.trial.build import build_cells, pack_configs
    from robustbench_opt.trial.device import autocast, pick_device, use_channels_last
    from robustbench_opt.trial.pack import Pack
    from robustbench_opt.trial.single import Single

    info = dataset_info(config.dataset)
    device = pick_device(config.device)
    built = build_cells(pack_configs(config, cells), info.num_classes, info.shape, device)
    context, _ = autocast(config.recipe, device)
    if cells > 1:
        stepper: Pack | Single = Pack([cell.model for cell in built], context)
    else:
        channels_last = use_channels_last(config.recipe, device)
        stepper = Single(built[0].model, context, False, channels_last)
    optimizers = [cell.optimizer for cell in built]
    batch = config.recipe.batch_size
    x = torch.randn((cells, batch, *info.shape), device=device)
    y = torch.randint(0, info.num_classes, (cells, batch), device=device)

    def step() -> float:
        start = time.perf_counter()
        stepper.step(optimizers, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        step()  # warm-up: allocations, lazy optimizer state
        times = [step() for _ in range(steps)]
        while sum(times) < CALIBRATION_SECONDS and len(times) < MAX_CALIBRATION_STEPS:
            times.append(step())
    finally:
        torch.set_num_threads(before)
    passes = 2 if optimizers[0].info.two_pass else 1
    return statistics.median(times) / (batch * passes * cells)


def time_threads(config: TrialConfig, threads: int) -> float:
    """Seconds per trained image of one cell of `config`'s kind on `threads` torch threads."""
    return time_training_images(config, CALIBRATION_STEPS, 1, threads)


def thread_counts(cpus: float) -> list[int]:
    """Threads per trial worth timing on `cpus` CPUs: 1, 2, 4, ... up to `cpus`."""
    counts = [1]
    while counts[-1] * 2 <= cpus:
        counts.append(counts[-1] * 2)
    return counts


def choose_threads(rates: dict[int, float], cells: int, cpus: int) -> int:
    """Threads per trial that finish `cells` one-cell trials soonest on `cpus` CPUs: with t
    threads, cpus // t trials run at once, in ceil(cells / (cpus // t)) rounds of `rates[t]`
    each (seconds per image: the rounds' relative length); the fewest threads on a tie (more
    trials at once)."""
    return min(rates, key=lambda t: (math.ceil(cells / max(1, cpus // t)) * rates[t], t))


def pack_speedup(config: TrialConfig, cells: int, timer: StepTimer) -> float:
    """Cells per second of a pack of `cells` cells of `config`'s kind over one cell alone, from
    `timer`'s short calibration on this machine (`time_training_images`)."""
    return timer(config, CALIBRATION_STEPS, 1) / timer(config, CALIBRATION_STEPS, cells)


def remembered(timer: StepTimer) -> StepTimer:
    """`timer`, timing each (config, steps, cells) once: the pack probe and the cost share it."""
    seen: dict[tuple[str, int, int], float] = {}

    def timed(config: TrialConfig, steps: int, cells: int) -> float:
        key = (repr(config), steps, cells)
        if key not in seen:
            seen[key] = timer(config, steps, cells)
        return seen[key]

    return timed


def device_kind(config: TrialConfig) -> str:
    from robustbench_opt.trial.device import pick_device  # imports torch

    return pick_device(config.device).type
