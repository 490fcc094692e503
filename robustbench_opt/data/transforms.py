"""Per-image augmentations (torchvision.transforms.v2) on uint8 CHW tensors, and batch CutMix.

torchvision is imported when a pipeline is built (importing it takes about a second, which the
device-resident path, the default, does not need).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from robustbench_opt.config import Recipe
from robustbench_opt.errors import unknown

if TYPE_CHECKING:
    from torchvision.transforms import v2

REFERENCE_SIZE = 32  # recipe.crop_padding is given in pixels of a 32x32 image


def crop_padding(padding: int, image_size: int) -> int:
    """`padding` scaled from 32x32 to `image_size` (4 px on CIFAR, 1 px on 8x8 digits)."""
    if padding == 0:
        return 0
    return max(1, round(padding * image_size / REFERENCE_SIZE))


class RandomBrightness:
    """Adds one delta ~ U[-max_delta, max_delta] to an image on the [0, 1] scale and clips.

    As tf.image.random_brightness followed by clip_by_value (seed 001), on a uint8 image: the
    result is rounded back to uint8, so it stays 8-bit like every other step of the pipeline.
    """

    def __init__(self, max_delta: float):
        self.max_delta = max_delta

    def __call__(self, image: Tensor) -> Tensor:
        delta = (torch.rand(()) * 2 - 1) * self.max_delta
        shifted = (image.to(torch.float32) / 255 + delta).clamp_(0, 1)
        return shifted.mul_(255).round_().to(torch.uint8)

    def __repr__(self) -> str:
        return f"RandomBrightness(max_delta={self.max_delta})"


# (torchvision.transforms.v2, recipe, image size) -> the steps of one `recipe.augment` name
Steps = Callable[[ModuleType, Recipe, int], list[Callable[[Tensor], Tensor]]]

_STEPS: dict[str, Steps] = {
    "crop": lambda v2, recipe, size: [
        v2.RandomCrop(size, padding=crop_padding(recipe.crop_padding, size)),
    ],
    "crop_flip": lambda v2, recipe, size: [
        v2.RandomCrop(size, padding=crop_padding(recipe.crop_padding, size)),
        v2.RandomHorizontalFlip(),
    ],
    "brightness": lambda v2, recipe, size: [RandomBrightness(recipe.brightness)],
    "trivialaugment": lambda v2, recipe, size: [v2.TrivialAugmentWide()],
}


def image_transform(recipe: Recipe, image_size: int) -> v2.Compose | None:
    """The per-image uint8 -> uint8 pipeline for `recipe.augment`, in order; None when empty."""
    from torchvision.transforms import v2

    steps: list[Callable[[Tensor], Tensor]] = []
    for name in recipe.augment:
        if name not in _STEPS:
            raise unknown("augmentation", name, _STEPS, "fix the recipe's augment list")
        steps.extend(_STEPS[name](v2, recipe, image_size))
    return v2.Compose(steps) if steps else None


def batch_cutmix(recipe: Recipe, num_classes: int) -> v2.CutMix | None:
    """torchvision's CutMix with lambda ~ Beta(alpha, alpha); None when cutmix_prob is 0."""
    if recipe.cutmix_prob <= 0:
        return None
    from torchvision.transforms import v2

    return v2.CutMix(alpha=recipe.cutmix_alpha, num_classes=num_classes)
