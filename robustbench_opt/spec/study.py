"""A validated study, its canonical form and its expansion into grid cells."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from robustbench_opt.config import Recipe, TrialConfig


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer entry of a study: a registry name with fixed keywords and optional own grid."""

    name: str  # registry name (or alias) as the user wrote it
    label: str  # display name, unique in the study
    kwargs: dict[str, Any] = field(default_factory=dict)  # fixed optimizer keywords
    lrs: tuple[float, ...] | None = None  # own lr grid; None = the study's
    weight_decays: tuple[float, ...] | None = None  # own wd grid; None = the study's
    epochs: int | None = None  # own epoch budget; None = the recipe's

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "kwargs": canonical(self.kwargs),
            "lrs": None if self.lrs is None else list(self.lrs),
            "weight_decays": None if self.weight_decays is None else list(self.weight_decays),
            "epochs": self.epochs,
        }


@dataclass(frozen=True)
class Resources:
    """What one trial asks the scheduler for."""

    cpus: float = 1.0
    gpus: float | Literal["auto"] = 0.0  # 0 = CPU only; "auto" = runner.packing decides
    packing: int | Literal["auto", "off"] = "auto"  # cells trained as one pack (one trial)


@dataclass(frozen=True)
class StudySpec:
    """A validated study file."""

    name: str
    dataset: str
    model: str
    optimizers: tuple[OptimizerSpec, ...]
    lrs: tuple[float, ...] | None = None
    weight_decays: tuple[float, ...] | None = None
    description: str = ""
    data_dir: str | None = None
    download: bool = False
    val_fraction: float = 0.0
    recipe: Recipe = field(default_factory=Recipe)
    variants: dict[str, dict[str, Any]] = field(default_factory=lambda: {"default": {}})
    seeds: tuple[int, ...] = (0,)
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None

    def variant_recipe(self, variant: str) -> Recipe:
        """The study recipe with one variant's overrides applied."""
        return dataclasses.replace(self.recipe, **self.variants[variant])

    def cells(self) -> list[TrialConfig]:
        """Every grid cell, fully resolved: optimizer x variant x lr x weight decay x seed."""
        cells = []
        for opt in self.optimizers:
            lrs = opt.lrs if opt.lrs is not None else self.lrs
            wds = opt.weight_decays if opt.weight_decays is not None else self.weight_decays
            assert lrs is not None and wds is not None, "load_study guarantees a grid"
            for variant in self.variants:
                recipe = self.variant_recipe(variant)
                if opt.epochs is not None:
                    recipe = dataclasses.replace(recipe, epochs=opt.epochs)
                for lr, wd, seed in itertools.product(lrs, wds, self.seeds):
                    cells.append(
                        TrialConfig(
                            dataset=self.dataset,
                            model=self.model,
                            optimizer=opt.name,
                            lr=lr,
                            weight_decay=wd,
                            recipe=recipe,
                            optimizer_kwargs=dict(opt.kwargs),
                            seed=seed,
                            data_dir=self.data_dir,
                            download=self.download,
                            val_fraction=self.val_fraction,
                            variant=variant,
                            label=None if opt.label == opt.name else opt.label,
                        )
                    )
        return cells

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-safe form: grids resolved to lists, every recipe field present."""
        return {
            "name": self.name,
            "description": self.description,
            "dataset": self.dataset,
            "data_dir": self.data_dir,
            "download": self.download,
            "val_fraction": self.val_fraction,
            "model": self.model,
            "recipe": self.recipe.to_dict(),
            "variants": {k: canonical(v) for k, v in self.variants.items()},
            "optimizers": [opt.to_dict() for opt in self.optimizers],
            "lrs": None if self.lrs is None else list(self.lrs),
            "weight_decays": None if self.weight_decays is None else list(self.weight_decays),
            "seeds": list(self.seeds),
            "resources": {
                "cpus": self.resources.cpus,
                "gpus": self.resources.gpus,
                "packing": self.resources.packing,
            },
            "max_concurrent": self.max_concurrent,
        }


def log_range(lo: float, hi: float, num: int) -> tuple[float, ...]:
    """`num` log-spaced values from lo to hi inclusive, rounded to 12 significant digits."""
    ratio = math.log(hi / lo)
    return tuple(float(f"{lo * math.exp(ratio * i / (num - 1)):.12g}") for i in range(num))


def canonical(value: Any) -> Any:
    """JSON-safe plain data with sorted mapping keys."""
    return json.loads(json.dumps(value, sort_keys=True))
