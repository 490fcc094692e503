"""Model registry: one line per network, looked up by name.

Each builder takes `(num_classes, shape)`, the shape of one example, channels first ((C, H, W)
images or (C, L) sequences), and returns a freshly initialised `nn.Module` that maps float
`[N, *shape]` inputs to logits `[N, num_classes]`. Each entry says which inputs it takes, so a
model that cannot run on a data set's examples is refused before anything trains
(`check_fits`). To add a network, write its builder in a module here and add one line to
`MODELS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from robustbench_opt.errors import UserError, unknown
from robustbench_opt.models import (
    airbench,
    cifar_resnet,
    cnn,
    cnn1d,
    mlp,
    torchvision_resnet,
    wide_resnet,
)

Inputs = Literal["image", "sequence", "any"]  # (C, H, W); (C, L); any shape


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: how to build the network, what it takes, where it comes from."""

    builder: Callable[[int, tuple[int, ...]], nn.Module]  # (num_classes, example shape)
    reference: str
    serves: str  # the seed experiment or workload (README) that uses this network
    inputs: Inputs = "image"
    min_side: int = 1  # the smallest spatial side (H, W or L) it runs on

    def problem(self, shape: tuple[int, ...]) -> str | None:
        """Why examples of `shape` do not fit, or None."""
        rank = {"image": 3, "sequence": 2}.get(self.inputs)
        if rank is not None and len(shape) != rank:
            return f"it takes {'images (C, H, W)' if rank == 3 else 'sequences (C, L)'}"
        if min(shape[1:], default=1) < self.min_side:
            return f"it needs sides of at least {self.min_side}"
        return None


MODELS: dict[str, ModelInfo] = {
    "simple_cnn": ModelInfo(
        cnn.SimpleCNN, "seed 000 blog: two conv + max-pool layers, then a classifier", "000",
        min_side=4,
    ),
    "mlp": ModelInfo(
        mlp.MLP, "MNIST-1D's MLP (Greydanus 2020): two hidden layers of 100, a residual one",
        "workloads", inputs="any",
    ),
    "cnn1d": ModelInfo(
        cnn1d.CNN1D, "MNIST-1D's ConvBase (Greydanus 2020): three strided conv1d, linear head",
        "workloads", inputs="sequence", min_side=8,
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
    "airbench": ModelInfo(
        airbench.AirbenchNet, "airbench94 body (Jordan 2024), no tricks", "fast", min_side=8
    ),
    "wrn28_10": ModelInfo(
        wide_resnet.wrn28_10, "Zagoruyko & Komodakis 2016 (1605.07146); SAM paper", "000 (SAM)"
    ),
}  # fmt: skip


def model_names() -> list[str]:
    """Registered model names, sorted."""
    return sorted(MODELS)


def fitting_models(shape: tuple[int, ...]) -> list[str]:
    """The registered models that run on examples of `shape`, sorted."""
    return [name for name in model_names() if MODELS[name].problem(shape) is None]


def check_fits(name: str, shape: tuple[int, ...], dataset: str = "the data") -> None:
    """UserError naming the model, the data's shape and the models that fit, when `name` is
    unknown or cannot run on examples of `shape`."""
    if name not in MODELS:
        raise unknown("model", name, MODELS, "set model to one of these", ("model",))
    problem = MODELS[name].problem(shape)
    if problem is not None:
        raise UserError(
            f"model {name!r} does not fit {dataset}'s examples of shape {shape} ({problem}); "
            f"models that fit: {', '.join(fitting_models(shape))}",
            ("model",),
        )


def build_model(name: str, num_classes: int, shape: tuple[int, ...]) -> nn.Module:
    """A freshly initialised `name` network for examples of `shape` (`check_fits` first)."""
    check_fits(name, tuple(shape))
    return MODELS[name].builder(num_classes, tuple(shape))
