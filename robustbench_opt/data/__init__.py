"""Data: whole data sets in memory (uint8 NCHW) and the batches a trial trains and evaluates on.

`load_splits` loads a data set, `train_batches` yields one epoch of augmented training batches,
`eval_batches` yields evaluation batches. Images reach the model normalised with the training
split's per-channel mean and std.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from robustbench_opt.config import Recipe
from robustbench_opt.data.device import device_batches, use_device_path
from robustbench_opt.data.loader import eval_batches, torchvision_batches
from robustbench_opt.data.readers import DEFAULT_DATA_DIR, check_data, load_splits
from robustbench_opt.data.splits import DataSplits
from robustbench_opt.datasets import DATASETS

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_DIR",
    "DataSplits",
    "check_data",
    "eval_batches",
    "load_splits",
    "train_batches",
    "use_device_path",
]


def train_batches(
    splits: DataSplits,
    recipe: Recipe,
    device: torch.device,
    seed: int,
    epoch: int,
    on_device: bool,
) -> Iterable[tuple[Tensor, Tensor]]:
    """One shuffled epoch of (normalised images, targets) on `device`.

    Targets are int64 labels, or float soft labels [B, K] (rows sum to 1) for a CutMixed batch.
    Deterministic for (seed, epoch). This is the single dispatch point between data paths:
    `device.device_batches` when `on_device` (a trial decides it once: `use_device_path`), else
    the torchvision path (`loader.torchvision_batches`).
    """
    if on_device:
        return device_batches(splits, recipe, device, seed, epoch)
    return torchvision_batches(splits, recipe, device, seed, epoch)
