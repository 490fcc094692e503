"""Model registry: one line per network, looked up by name.

Each builder takes `(num_classes, in_channels, image_size)` and returns a freshly initialised
`nn.Module` that maps float `[N, in_channels, image_size, image_size]` images to logits
`[N, num_classes]`. To add a network, write its builder in a module here and add one line to
`MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from robustbench_opt.errors import unknown
from robustbench_opt.models import airbench, cifar_resnet, cnn, torchvision_resnet, wide_resnet


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: how to build the network, where it comes from, which seed uses it."""

    builder: Callable[[int, int, int], nn.Module]  # (num_classes, in_channels, image_size)
    reference: str
    serves: str  # the seed experiment (README, "Seed experiments") that uses this network


MODELS: dict[str, ModelInfo] = {
    "simple_cnn": ModelInfo(
        cnn.SimpleCNN, "seed 000 blog: two conv + max-pool layers, then a classifier", "000"
    ),
    "resnet20": ModelInfo(
        cifar_resnet.resnet20, "He et al. 2016 (1512.03385) sec. 4.2, option A", "001"
    ),
    "resnet56": ModelInfo(
        cifar_resnet.resnet56, "He et al. 2016 (1512.03385) sec. 4.2, option A", "003 Tables 1-2"
    ),
    "resnet18": ModelInfo(torchvision_resnet.resnet18, "torchvision, CIFAR stem", "extra"),
    "resnet34": ModelInfo(torchvision_resnet.resnet34, "torchvision, CIFAR stem", "003 Table 3"),
    "resnet50": ModelInfo(torchvision_resnet.resnet50, "torchvision, CIFAR stem", "002"),
    "airbench": ModelInfo(airbench.AirbenchNet, "airbench94 body (Jordan 2024), no tricks", "fast"),
    "wrn28_10": ModelInfo(
        wide_resnet.wrn28_10, "Zagoruyko & Komodakis 2016 (1605.07146); SAM paper", "000 (SAM)"
    ),
}


def model_names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def build_model(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """A freshly initialised `name` network; UserError listing the valid names if unknown."""
    if name not in MODELS:
        raise unknown("model", name, MODELS, "set model to one of these", ("model",))
    return MODELS[name].builder(num_classes, in_channels, image_size)
