"""The torchvision path: shuffled, augmented training batches through a DataLoader.

Every batch is built under the CPU RNG seeded from (seed, epoch, batch number), so the
batches of an epoch are the same whatever the number of workers and whatever ran before.
Workers return uint8 images; normalisation happens on the target device (4x less to copy).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from robustbench_opt.config import Recipe
from robustbench_opt.data.splits import DataSplits, check_batch_size, normalisation
from robustbench_opt.data.transforms import batch_cutmix, image_transform
from robustbench_opt.datasets import check_augmentation

MAX_WORKERS = 8  # DataLoader processes when augmenting per image (auto mode)


def derive_seed(*parts: int) -> int:
    """A well-mixed 64-bit seed from non-negative integers (numpy's SeedSequence)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0])


class SeededBatches(Dataset):
    """Item b is batch b of one epoch: (uint8 images, int64 labels or float soft labels)."""

    def __init__(self, splits: DataSplits, recipe: Recipe, seed: int, epoch: int):
        check_batch_size(splits, recipe.batch_size)
        check_augmentation(splits.name, splits.shape, recipe.augment, recipe.cutmix_prob)
        generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 0))
        self.order = torch.randperm(len(splits.train_y), generator=generator)
        self.splits, self.recipe, self.seed, self.epoch = splits, recipe, seed, epoch
        self.transform = image_transform(recipe, splits.shape[-1])
        self.cutmix = batch_cutmix(recipe, splits.num_classes)

    def __len__(self) -> int:
        return len(self.order) // self.recipe.batch_size  # drop the last partial batch

    def __getitem__(self, batch: int) -> tuple[Tensor, Tensor]:
        size = self.recipe.batch_size
        index = self.order[batch * size : (batch + 1) * size]
        images, labels = self.splits.train_x[index], self.splits.train_y[index]
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(derive_seed(self.seed, self.epoch, 1, batch))
            if self.transform is not None:
                images = torch.stack([self.transform(image) for image in images])
            if self.cutmix is not None and torch.rand(()) < self.recipe.cutmix_prob:
                images, labels = self.cutmix(images, labels)
        return images, labels


def torchvision_batches(
    splits: DataSplits,
    recipe: Recipe,
    device: torch.device,
    seed: int,
    epoch: int,
    workers: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yields (normalised images in torch's default float dtype, targets) on `device` for one epoch.

    `workers` = DataLoader processes; None = 0 without per-image augmentation, otherwise
    min(MAX_WORKERS, CPU count - 1).
    """
    batches = SeededBatches(splits, recipe, seed, epoch)
    if workers is None:
        workers = 0 if batches.transform is None else min(MAX_WORKERS, (os.cpu_count() or 1) - 1)
    loader = DataLoader(
        batches, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda"
    )
    scale, shift = normalisation(splits, device)
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if labels.is_floating_point():  # CutMix's soft labels
            labels = labels.to(torch.get_default_dtype())
        yield images.to(torch.get_default_dtype()).mul_(scale).add_(shift), labels


def eval_batches(
    x: Tensor, y: Tensor, splits: DataSplits, batch_size: int, device: torch.device
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yields (normalised images in the default float dtype, int64 labels) on `device`, in
    order, no augmentation."""
    scale, shift = normalisation(splits, device)
    for start in range(0, len(y), batch_size):
        images = x[start : start + batch_size].to(device, non_blocking=True)
        labels = y[start : start + batch_size].to(device, non_blocking=True)
        yield images.to(torch.get_default_dtype()).mul_(scale).add_(shift), labels
