"""A trial's memory and compute from its model's size: how much of one GPU it should take (Ray
fractional GPUs, `gpus: auto`), and how many cells fit in one packed trial (`cells_per_pack`).

A small trial leaves most of a GPU idle, so several of them can share it. The rule, from the
model's size on the trial's data set (parameters and per-image activations, measured by one
forward pass on the meta device: no memory, no data):

- work per step = batch size x activation elements per image. A GPU is taken to be busy from
  `SATURATING_WORK` elements per step; below that, k trials share it while k x work fits.
- memory = weights, gradients and up to three optimizer-state copies (fp32), activations saved
  for backward (x 2 for their gradients), the training split on the device (uint8) and a fixed
  per-process overhead (CUDA context, allocator); k trials must fit `REFERENCE_GPU_BYTES`.
- trials per GPU k = the largest power of two <= `MAX_TRIALS_PER_GPU` meeting both; the
  fraction is 1 / k (exact binary fractions, as Ray's resource accounting wants).

A study that names a fraction in `resources.gpus` uses that instead (the runner decides).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from robustbench_opt.config import TrialConfig
from robustbench_opt.datasets import dataset_info
from robustbench_opt.models import build_model
from robustbench_opt.spec import Resources

SATURATING_WORK = 2**28  # activation elements per step from which one trial keeps a GPU busy
REFERENCE_GPU_BYTES = 16 * 2**30  # memory of the smallest GPU we plan for (T4, V100-16GB)
PROCESS_OVERHEAD_BYTES = 2**30  # CUDA context + allocator slack per trial process
STATE_COPIES = 5  # fp32 weights, gradients, up to three optimizer states (SAM: + perturbation)
MAX_TRIALS_PER_GPU = 8


@dataclass(frozen=True)
class Footprint:
    """A model's size on a data set: parameters and forward activation elements per image."""

    params: int
    activations: int  # sum of the output elements of every leaf module, one image


@dataclass(frozen=True)
class Estimate:
    """The packing decision for one trial and the numbers behind it."""

    footprint: Footprint
    step_work: int  # batch size x activations
    memory_bytes: int  # one trial's estimated peak GPU memory
    trials_per_gpu: int

    @property
    def fraction(self) -> float:
        return 1.0 / self.trials_per_gpu


@lru_cache(maxsize=64)
def footprint(model: str, dataset: str) -> Footprint:
    """Parameters and per-image activation elements of `model` on `dataset` (meta device)."""
    info = dataset_info(dataset)
    with torch.device("meta"):
        net = build_model(model, info.num_classes, info.shape)
        image = torch.empty(1, *info.shape)
    total = 0

    def count(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        total += output.numel()

    leaves = [m for m in net.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    with torch.no_grad():
        net(image)
    for handle in handles:
        handle.remove()
    return Footprint(params=sum(p.numel() for p in net.parameters()), activations=total)


def estimate(config: TrialConfig) -> Estimate:
    """The packing rule of the module docstring applied to one trial."""
    size = footprint(config.model, config.dataset)
    info = dataset_info(config.dataset)
    batch = config.recipe.batch_size
    step_work = batch * size.activations
    data_bytes = info.train_size * info.example_size
    memory = (
        PROCESS_OVERHEAD_BYTES + STATE_COPIES * 4 * size.params + 2 * 4 * step_work + data_bytes
    )
    k = MAX_TRIALS_PER_GPU
    while k > 1 and (k * step_work > SATURATING_WORK or k * memory > REFERENCE_GPU_BYTES):
        k //= 2
    return Estimate(size, step_work, memory, k)


def gpu_fraction(config: TrialConfig, cells: int = 1) -> float:
    """Fraction of one GPU a trial of `cells` packed cells should take: 1, 1/2, 1/4 or 1/8
    (see module docstring; a pack counts as `cells` trials)."""
    per_gpu = estimate(config).trials_per_gpu
    return min(1.0, 2.0 ** math.ceil(math.log2(cells / per_gpu))) if cells < per_gpu else 1.0


def cells_per_pack(config: TrialConfig, resources: Resources, slots: int) -> int:
    """How many cells of `config`'s kind fit in one trial's memory: per cell, weights,
    gradients, optimizer state and activations at the batch size; once per trial, the process
    overhead and the data. The budget is one GPU's share (`REFERENCE_GPU_BYTES` x the study's
    GPU fraction) when trials get GPUs, else this machine's available RAM per slot."""
    est = estimate(config)
    per_cell = STATE_COPIES * 4 * est.footprint.params + 2 * 4 * est.step_work
    shared = est.memory_bytes - per_cell
    gpus = resources.gpus
    if gpus == "auto" or gpus > 0:
        budget = REFERENCE_GPU_BYTES * (1.0 if gpus == "auto" else float(gpus))
    else:
        budget = available_ram() / max(1, slots)
    return max(1, int((budget - shared) // per_cell))


def available_ram() -> int:
    """Bytes of memory available to new processes (MemAvailable; total RAM if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
