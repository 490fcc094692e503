"""The plan's timed figures on this machine: seconds per trained image of a config's kind,
alone or packed (the cost calibration and `packing: auto`'s probe) and on 1, 2, 4, ... torch
threads (`resources.cpus: auto`), from a few real training steps on random images.

Each figure is kept in this machine's calibration cache (`Calibration`, a JSON file under
`cache_dir()`), keyed by what it depends on (`figure_key`), so the next plan on the machine
(the run after a dry run, the next study of the same model) reads it instead of timing.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from robustbench_opt.config import TrialConfig
from robustbench_opt.datasets import dataset_info
from robustbench_opt.runner import forked

CALIBRATION_STEPS = 3  # timed training steps (at least; after one warm-up) when nothing is measured
CALIBRATION_SECONDS = 0.5  # ... and more steps while their total stays under this
MAX_CALIBRATION_STEPS = 50
CPU_QUOTA = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "QUOTA PERIOD" (microseconds) or "max ..."
CACHE_FILE = "calibration.json"  # in `cache_dir()`

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
    """Seconds per trained image of one cell of `config`'s kind on `threads` torch threads:
    in a forked process when more than one (the driver stays on one, `forked`)."""
    if threads == 1:
        return time_training_images(config, CALIBRATION_STEPS, 1, threads)
    return forked.call(time_training_images, config, CALIBRATION_STEPS, 1, threads)


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


def device_kind(config: TrialConfig) -> str:
    from robustbench_opt.trial.device import pick_device  # imports torch

    return pick_device(config.device).type


def local_cpus() -> int:
    """The CPUs this process may use: its CPU affinity (a Slurm or `taskset` allocation),
    capped by a cgroup v2 CPU quota (a container's `--cpus`); a local Ray is started with
    this many."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        count = os.cpu_count() or 1
    try:
        quota, period = CPU_QUOTA.read_text().split()
        if quota != "max":
            count = min(count, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return count


def cache_dir() -> Path:
    """This user's cache directory: $ROBUSTBENCH_CACHE, else $XDG_CACHE_HOME/robustbench-opt,
    else ~/.cache/robustbench-opt."""
    if os.environ.get("ROBUSTBENCH_CACHE"):
        return Path(os.environ["ROBUSTBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "robustbench-opt"


def figure_key(config: TrialConfig, cells: int, threads: int) -> str:
    """What a figure of `config`'s kind at `cells` cells and `threads` threads depends on, as
    one string: this machine (host name, the CPUs this process may use, the config's device,
    torch's version) and the timed step's shape (data set, model, batch size, the recipe's
    switches that change a step, one pass or two); nothing that identifies a cell (its lr,
    weight decay, seed, optimizer keywords or study)."""
    import torch

    from robustbench_opt.optim import get_info
    from robustbench_opt.trial.device import pick_device

    device = pick_device(config.device)
    recipe = config.recipe
    key = {
        "host": socket.gethostname(),
        "cpus": local_cpus(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "torch": torch.__version__,
        "dataset": config.dataset,
        "model": config.model,
        "batch_size": recipe.batch_size,
        "channels_last": recipe.channels_last,
        "amp_bf16": recipe.amp_bf16,
        "compile": recipe.compile,
        "two_pass": get_info(config.optimizer).two_pass,
        "cells": cells,
        "threads": threads,
    }
    return json.dumps(key, sort_keys=True)


@dataclass
class Calibration:
    """This machine's figures, kept in its calibration cache at `path`: a figure stored there
    under the same `figure_key` is read instead of timed (unless `recalibrate`: each is timed
    anew, once); a figure timed is stored. An unreadable or corrupt file counts as empty and
    is rewritten; one that cannot be written keeps nothing. Writes are atomic (a temporary
    file renamed over the old one), so a reader never sees half a file."""

    path: Path = field(default_factory=lambda: cache_dir() / CACHE_FILE)
    recalibrate: bool = False
    # key -> (seconds per image, when measured: an ISO time for a stored figure, None for now)
    seen: dict[str, tuple[float, str | None]] = field(default_factory=dict, repr=False)

    def figure(
        self, config: TrialConfig, cells: int, threads: int, measure: Callable[[], float]
    ) -> float:
        """The figure of `config`'s kind at `cells` cells and `threads` threads: seen in this
        plan, else stored (unless recalibrating), else `measure()`d now and stored."""
        key = figure_key(config, cells, threads)
        if key not in self.seen:
            stored = None if self.recalibrate else self._stored().get(key)
            self.seen[key] = stored or (measure(), None)
            if stored is None:
                self._store(key, self.seen[key][0])
        return self.seen[key][0]

    def step_timer(self, timer: StepTimer) -> StepTimer:
        """`timer`'s figures (one thread), through this calibration."""
        return lambda config, steps, cells: self.figure(
            config, cells, 1, lambda: timer(config, steps, cells)
        )

    def thread_timer(self, timer: ThreadTimer) -> ThreadTimer:
        """`timer`'s figures (one cell), through this calibration."""
        return lambda config, threads: self.figure(
            config, 1, threads, lambda: timer(config, threads)
        )

    def source(self, config: TrialConfig, sizes: Iterable[tuple[int, int]]) -> str:
        """How this plan had the figures of `config` at these (cells, threads): "timed now",
        "from this machine's calibration cache, measured <the oldest's time>", or both; ""
        when none of them was asked for."""
        found = [
            self.seen[k] for k in (figure_key(config, *size) for size in sizes) if k in self.seen
        ]
        dates = sorted(when for _, when in found if when is not None)
        if not dates:
            return "timed now" if found else ""
        shown = datetime.fromisoformat(dates[0]).strftime("%Y-%m-%d %H:%M UTC")
        cached = f"from this machine's calibration cache, measured {shown}"
        return cached if len(dates) == len(found) else f"{cached}; the rest timed now"

    def _stored(self) -> dict[str, tuple[float, str]]:
        """The file's valid figures (none when it is missing, unreadable or corrupt)."""
        try:
            figures = json.loads(self.path.read_text())["figures"]
            items = figures.items()
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            return {}
        valid = {}
        for key, entry in items:
            try:
                seconds, when = entry["seconds"], entry["measured"]
                datetime.fromisoformat(when)
            except (KeyError, TypeError, ValueError):
                continue
            if isinstance(seconds, float) and math.isfinite(seconds) and seconds > 0:
                valid[key] = (seconds, when)
        return valid

    def _store(self, key: str, seconds: float) -> None:
        """Adds the figure to the file as it is now (figures other plans stored meanwhile
        kept), written to a temporary file and renamed over it."""
        when = datetime.now(UTC).isoformat(timespec="seconds")
        figures: dict[str, Any] = {
            k: {"seconds": s, "measured": w} for k, (s, w) in self._stored().items()
        }
        figures[key] = {"seconds": seconds, "measured": when}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        except OSError:
            return
        try:
            with os.fdopen(fd, "w") as out:
                json.dump({"figures": figures}, out, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
