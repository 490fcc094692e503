"""The in-memory data set every trial trains on, and how its fixed splits are drawn."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from robustbench_opt.errors import UserError


@dataclass(frozen=True)
class DataSplits:
    """A whole data set in memory: uint8 channels-first examples, int64 labels."""

    name: str
    num_classes: int
    shape: tuple[int, ...]  # one example: (C, H, W) images, (C, L) sequences
    mean: tuple[float, ...]  # per channel, [0, 1] scale, from train_x
    std: tuple[float, ...]  # per channel, [0, 1] scale, from train_x
    train_x: Tensor  # uint8 [N, *shape]
    train_y: Tensor  # int64 [N]
    test_x: Tensor
    test_y: Tensor
    val_x: Tensor | None = None  # held out of the training split; None without val_fraction
    val_y: Tensor | None = None


def normalisation(splits: DataSplits, device: torch.device) -> tuple[Tensor, Tensor]:
    """(scale, shift), [1, C, 1, ...] on `device`: uint8 * scale + shift = (x/255 - mean) / std."""
    mean = torch.tensor(splits.mean, dtype=torch.float64)
    std = torch.tensor(splits.std, dtype=torch.float64)
    scale, shift = 1 / (255 * std), -mean / std
    view = (1, -1) + (1,) * (len(splits.shape) - 1)
    return (
        scale.to(torch.get_default_dtype()).view(view).to(device),
        shift.to(torch.get_default_dtype()).view(view).to(device),
    )


def check_batch_size(splits: DataSplits, batch_size: int) -> None:
    """A batch must fit in the training split (both paths drop the last partial batch)."""
    n = len(splits.train_y)
    if batch_size > n:
        raise UserError(
            f"batch_size {batch_size} exceeds the {n} training images of {splits.name!r}; "
            f"use a batch_size of at most {n}"
        )


def stratified_holdout(y: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Indices (kept, held out), each sorted; round(fraction * n_c) of every class c held out."""
    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for label in torch.unique(y):
        members = torch.nonzero(y == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        n_held = round(fraction * len(members))
        held.append(members[:n_held])
        kept.append(members[n_held:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def channel_stats(x: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of uint8 examples [N, C, ...] on the [0, 1] scale."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    dims = (0, *range(2, x.ndim))  # every axis but the channels
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk].to(torch.float64).div_(255)
        total += block.sum(dim=dims)
        squares += block.square_().sum(dim=dims)
    count = x.numel() // x.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
