"""Time one trial configuration two ways on the current device, in the same run.

- `plain`: what most users would write. A map-style Dataset applying the torchvision v2
  transforms per image (augmentation, ToDtype, Normalize), a shuffling DataLoader (workers as
  the product's loader picks them), CutMix on the collated batch, an eager model: no
  channels_last, no autocast, no compile.
- `device`: our path. The training split on the device, batched augmentation there
  (`data.device.device_batches`), and the recipe's speed options (channels_last, bf16 autocast,
  torch.compile) as the trial would use them.

Both train the same model from the same initial weights with the same optimizer, batch size and
augmentation. Every path builds its cells as a trial does (`trial.build.build_cells`: seeds,
weight-decay parameter groups, registry optimizer), so what it times is what a trial trains.

`bench_pack` times K grid cells (lr spread around the config's, seeds config.seed + i) two ways
in the same run: `sequential`, one cell after another, each stepped on its own (`trial.single`),
and `packed`, the same K cells as one `trial.pack.Pack` (one vmapped forward/backward per step).
Both draw each cell's batches from its own seed on the trial's data path. `synthetic_splits`
makes CIFAR-shaped random images in memory, so it needs no download.

Each path is built and runs `warmup` untimed epochs (worker start-up, cuDNN
autotuning, compilation; its peak memory is measured here, before the other path exists). The
`epochs` timed epochs then alternate between the paths, each ending with a device
synchronisation, and the median epoch is reported: load from other processes hits both paths
alike and a burst of it moves the median less than the mean.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from robustbench_opt.config import TrialConfig, check_recipe
from robustbench_opt.data import DataSplits, load_splits
from robustbench_opt.data.device import use_device_path
from robustbench_opt.data.loader import MAX_WORKERS
from robustbench_opt.data.transforms import batch_cutmix, image_transform
from robustbench_opt.errors import UserError
from robustbench_opt.trial.build import BuiltCell, build_cells, pack_configs
from robustbench_opt.trial.device import describe_device, pick_device
from robustbench_opt.trial.engine import Trial
from robustbench_opt.trial.provenance import package_versions
from robustbench_opt.trial.single import Single

PATHS = ("plain", "device")
PACK_PATHS = ("sequential", "packed")
Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]  # epoch (1-based) -> batches


@dataclass(frozen=True)
class BenchRecord:
    """Throughput of one path, with its provenance."""

    path: str  # "plain" or "device"
    device: str  # e.g. "cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu (x86_64, 2 threads)"
    images_per_s: float  # training images of one epoch / seconds_per_epoch
    seconds_per_epoch: float  # median wall time of the timed epochs (robust to a busy machine)
    epoch_seconds: list[float]  # wall time of every timed epoch
    peak_memory_bytes: int  # peak growth while this path was built and warmed up (see _Memory)
    memory_kind: str  # "cuda peak allocated delta" or "cpu peak rss delta"
    images: int  # training images in the timed epochs
    epochs: int  # timed epochs
    warmup_epochs: int
    workers: int  # DataLoader worker processes (0 for the device path)
    speedup: float  # images_per_s / the plain path's images_per_s
    options: dict[str, Any]  # speed options this path used
    versions: dict[str, str]
    config: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class PerImage(Dataset):
    """Image i through the per-image torchvision pipeline, as a float32 normalised tensor."""

    def __init__(self, splits: DataSplits, transform: v2.Transform):
        self.splits, self.transform = splits, transform

    def __len__(self) -> int:
        return len(self.splits.train_y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.transform(self.splits.train_x[index]), self.splits.train_y[index]


def plain_workers(config: TrialConfig) -> int:
    """DataLoader processes for the plain path: the product loader's rule."""
    if not config.recipe.augment:
        return 0
    return min(MAX_WORKERS, (os.cpu_count() or 1) - 1)


def plain_batches(
    splits: DataSplits, config: TrialConfig, device: torch.device, workers: int
) -> Batches:
    """The textbook loop's batches: per-image transforms, DataLoader, CutMix after collation."""
    recipe = config.recipe
    steps = image_transform(recipe, splits.shape[-1])
    transform = v2.Compose(
        [
            *(steps.transforms if steps is not None else []),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(splits.mean), list(splits.std)),
        ]
    )
    cutmix = batch_cutmix(recipe, splits.num_classes)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        PerImage(splits, transform),
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        generator=generator,
        persistent_workers=workers > 0,
    )

    def epoch(_: int) -> Iterator[tuple[Tensor, Tensor]]:
        for images, labels in loader:
            if cutmix is not None and torch.rand(()) < recipe.cutmix_prob:
                images, labels = cutmix(images, labels)
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    return epoch


def _rss_bytes() -> int:
    """Resident memory of this process now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if platform.system() == "Darwin" else peak * 1024


def _release_freed() -> None:
    """Hand freed heap pages back to the OS (glibc `malloc_trim`), so a path's resident-set
    growth is not hidden by pages an earlier path freed; a no-op without glibc."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _Memory:
    """Peak memory growth while a path is built and warmed up, before the other path runs:
    CUDA max allocated, or the process's resident set (DataLoader workers not included) after
    freed heap pages went back to the OS."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.kind = "cuda peak allocated delta" if self.cuda else "cpu peak rss delta"
        self.device = device
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
            self.start = torch.cuda.memory_allocated(device)
        else:
            _release_freed()
            self.start = _rss_bytes()
        self.peak = self.start

    def sample(self) -> None:
        if not self.cuda:
            self.peak = max(self.peak, _rss_bytes())

    def result(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device)) - self.start
        return self.peak - self.start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass
class _Path:
    """One path, built and warmed up, ready for timed epochs."""

    name: str
    run_epoch: Callable[[int], int]  # 1-based epoch -> training images
    options: dict[str, Any]
    workers: int
    memory_bytes: int
    memory_kind: str
    cells: list[BuiltCell]  # what it trains, built as a trial builds it (`build_cells`)


def _build(configs: list[TrialConfig], splits: DataSplits, device: torch.device) -> list[BuiltCell]:
    return build_cells(configs, splits.num_classes, splits.shape, device)


def prepare_path(
    name: str, config: TrialConfig, splits: DataSplits, device: torch.device, warmup: int
) -> _Path:
    """Builds `name`'s model, optimizer and batches, runs `warmup` epochs, measures memory.

    "device" is the trial engine's own epoch (`trial.engine.Trial` on the device-resident
    data, with the recipe's speed options); "plain" is the textbook loop over the same cell,
    built as the trial builds it, stepped eagerly (no channels_last, autocast or compile)."""
    memory = _Memory(device)
    if name == "device":
        trial = Trial([config], splits, device, on_device=True, start=time.perf_counter())
        cells = [cell.built for cell in trial.cells]
        options = {
            "channels_last": trial.runtime["channels_last"],
            "amp_bf16": config.recipe.amp_bf16 and device.type == "cuda",
            "compile": trial.runtime["compile"],
        }
        workers = 0

        def run_epoch(epoch: int, sample: Callable[[], None] | None = None) -> int:
            return trial.train_epoch(epoch - 1, None if sample is None else lambda *_: sample())
    else:
        cells = _build([config], splits, device)
        options = {"channels_last": False, "amp_bf16": False, "compile": False}
        stepper = Single(cells[0].model, nullcontext, False, False)
        workers = plain_workers(config)
        batches = plain_batches(splits, config, device, workers)

        def run_epoch(epoch: int, sample: Callable[[], None] | None = None) -> int:
            seen = 0
            for inputs, targets in batches(epoch):
                stepper.step([cells[0].optimizer], inputs.unsqueeze(0), targets.unsqueeze(0))
                seen += targets.shape[0]
                if sample is not None:
                    sample()
            return seen

    for epoch in range(1, warmup + 1):
        run_epoch(epoch, memory.sample)
    _synchronize(device)
    return _Path(name, run_epoch, options, workers, memory.result(), memory.kind, cells)


def _prime(config: TrialConfig, splits: DataSplits, device: torch.device) -> None:
    """One throwaway forward-backward, so one-time costs (library handles, kernel caches) are
    paid before memory is measured and not charged to whichever path runs first."""
    [cell] = _build([config], splits, device)
    shape = (config.recipe.batch_size, *splits.shape)
    cell.model(torch.zeros(shape, device=device)).sum().backward()
    _synchronize(device)


def bench(config: TrialConfig, epochs: int = 3, warmup: int = 1) -> list[BenchRecord]:
    """Both paths on the trial's device; timed epochs alternate between the paths, so a burst
    of load from elsewhere hits both alike. `speedup` is relative to the plain path."""
    check_recipe(config.recipe)
    if warmup < 1:
        raise UserError(
            f"warmup must be at least 1 epoch, got {warmup}; set warmup to 1 or more", ("warmup",)
        )
    device = pick_device(config.device)
    splits = load_splits(config.dataset, config.data_dir, config.download, config.val_fraction)
    _prime(config, splits, device)
    paths = [prepare_path(name, config, splits, device, warmup) for name in PATHS]
    return _timed(paths, config, device, epochs, warmup)


def _timed(
    paths: list[_Path], config: TrialConfig, device: torch.device, epochs: int, warmup: int
) -> list[BenchRecord]:
    """Timed epochs alternating between `paths`; records with speedups over the first."""
    times: dict[str, list[float]] = {path.name: [] for path in paths}
    images = dict.fromkeys(times, 0)
    for epoch in range(warmup + 1, warmup + epochs + 1):
        for path in paths:
            start = time.perf_counter()
            images[path.name] += path.run_epoch(epoch)
            _synchronize(device)
            times[path.name].append(time.perf_counter() - start)
    records = []
    for path in paths:
        median = statistics.median(times[path.name])
        records.append(
            BenchRecord(
                path=path.name,
                device=describe_device(device),
                images_per_s=images[path.name] / epochs / median,
                seconds_per_epoch=median,
                epoch_seconds=times[path.name],
                peak_memory_bytes=path.memory_bytes,
                memory_kind=path.memory_kind,
                images=images[path.name],
                epochs=epochs,
                warmup_epochs=warmup,
                workers=path.workers,
                speedup=1.0,
                options=path.options,
                versions=package_versions(),
                config=config.to_dict(),
            )
        )
    base = records[0].images_per_s
    return [replace(r, speedup=r.images_per_s / base) for r in records]


def synthetic_splits(images: int, seed: int = 0) -> DataSplits:
    """CIFAR-shaped data made in memory: `images` random uint8 3x32x32 training images with
    labels in 10 classes, and a 512-image test split (timing only, nothing to learn)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (images + 512, 3, 32, 32), generator=generator, dtype=torch.uint8)
    y = torch.randint(0, 10, (images + 512,), generator=generator)
    return DataSplits(
        name="synthetic-cifar", num_classes=10, shape=(3, 32, 32),
        mean=(0.5, 0.5, 0.5), std=(0.29, 0.29, 0.29),
        train_x=x[:images], train_y=y[:images], test_x=x[images:], test_y=y[images:],
    )  # fmt: skip


def prepare_pack_path(
    name: str,
    configs: list[TrialConfig],
    splits: DataSplits,
    device: torch.device,
    warmup: int,
) -> _Path:
    """K cells as the trial engine trains them, for `name` ("sequential": K trials of one
    cell, one after another; "packed": one trial of K cells, one `Pack`), `warmup` epochs run
    and memory measured. Training epochs only: no evaluation in either."""
    on_device = use_device_path(splits, configs[0].recipe, device)
    memory = _Memory(device)
    start = time.perf_counter()
    if name == "packed":
        trials = [Trial(configs, splits, device, on_device, start)]
    else:
        trials = [Trial([config], splits, device, on_device, start) for config in configs]
    cells = [cell.built for trial in trials for cell in trial.cells]

    def run_epoch(epoch: int, sample: Callable[[], None] | None = None) -> int:
        report = None if sample is None else lambda *_: sample()
        return sum(trial.train_epoch(epoch - 1, report) for trial in trials)

    for epoch in range(1, warmup + 1):
        run_epoch(epoch, memory.sample)
    _synchronize(device)
    options = {"cells": len(configs), "data_on_device": on_device}
    return _Path(name, run_epoch, options, 0, memory.result(), memory.kind, cells)


def bench_pack(
    config: TrialConfig,
    cells: int,
    epochs: int = 3,
    warmup: int = 1,
    splits: DataSplits | None = None,
) -> list[BenchRecord]:
    """K cells one after another against the same K cells packed, in the same run; `speedup`
    is relative to the sequential path. `splits` default to the config's data set."""
    check_recipe(config.recipe)
    if warmup < 1:
        raise UserError(f"warmup must be at least 1 epoch, got {warmup}; use --warmup 1 or more")
    if cells < 1:
        raise UserError(f"a pack needs at least 1 cell, got {cells}; use --pack 1 or more")
    device = pick_device(config.device)
    if splits is None:
        splits = load_splits(config.dataset, config.data_dir, config.download, config.val_fraction)
    _prime(config, splits, device)
    configs = pack_configs(config, cells)
    paths = [prepare_pack_path(name, configs, splits, device, warmup) for name in PACK_PATHS]
    return _timed(paths, config, device, epochs, warmup)
