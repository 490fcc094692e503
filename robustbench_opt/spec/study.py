"""A validated study, its canonical form and its expansion into cells.

Cells are optimizer entry x variant x point of the entry's space x seed. Without a `space`, an
entry's space is the grid of its `lrs` x `weight_decays` (the order, and so every cell
identity, is the one studies had before spaces existed).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from robustbench_opt.config import Recipe, TrialConfig
from robustbench_opt.space import Axis, Point, design_points, merge_axes


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer entry of a study: a registry name with fixed keywords and optional own grid."""

    name: str  # registry name (or alias) as the user wrote it
    label: str  # display name, unique in the study
    kwargs: dict[str, Any] = field(default_factory=dict)  # fixed optimizer keywords
    lrs: tuple[float, ...] | None = None  # own lr grid; None = the study's
    weight_decays: tuple[float, ...] | None = None  # own wd grid; None = the study's
    epochs: int | None = None  # own epoch budget; None = the recipe's
    space: tuple[Axis, ...] | None = None  # own axes: override or add to the study's

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "label": self.label,
            "kwargs": canonical(self.kwargs),
            "lrs": None if self.lrs is None else list(self.lrs),
            "weight_decays": None if self.weight_decays is None else list(self.weight_decays),
            "epochs": self.epochs,
        }
        if self.space is not None:  # absent before spaces existed: identities unchanged
            out["space"] = [axis.to_dict() for axis in self.space]
        return out


# (workload name or None, optimizer label, point index) -> the point's values
Stored = dict[tuple[str | None, str, int], dict[str, Any]]


@dataclass(frozen=True)
class Workload:
    """One workload of a multi-workload study: a data set and a model, with recipe overrides
    (over the study's recipe) and axes (over the study's space, under each entry's own)."""

    name: str  # unique in the study; a cell's `workload`
    dataset: str
    model: str
    recipe: dict[str, Any] = field(default_factory=dict)  # Recipe field overrides
    space: tuple[Axis, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "dataset": self.dataset,
            "model": self.model,
            "recipe": canonical(self.recipe),
        }
        if self.space is not None:
            out["space"] = [axis.to_dict() for axis in self.space]
        return out


@dataclass(frozen=True)
class Space:
    """A study's search space: the design, its size and seed, and the axes every optimizer
    entry shares (entries override or add axes)."""

    design: str = "grid"  # space.DESIGNS
    points: int | None = None  # sampled designs: the first `points` of the sequence
    seed: int = 0  # sampled designs: the sequence's seed
    axes: tuple[Axis, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "design": self.design,
            "points": self.points,
            "seed": self.seed,
            "axes": [axis.to_dict() for axis in self.axes],
        }


@dataclass(frozen=True)
class Resources:
    """What one trial asks the scheduler for."""

    cpus: float | Literal["auto"] = 1.0  # "auto": the plan measures threads per trial
    gpus: float | Literal["auto"] = 0.0  # 0 = CPU only; "auto" = runner.memory decides
    packing: int | Literal["auto", "off"] = "auto"  # cells trained as one pack (one trial)
    # who trains the trials: worker processes of the driver, Ray workers, or "auto" (local for
    # CPU trials on this machine, else Ray)
    executor: Literal["auto", "local", "ray"] = "auto"


@dataclass(frozen=True)
class StudySpec:
    """A validated study file."""

    name: str
    dataset: str | None  # None: the study lists `workloads`
    model: str | None
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
    space: Space | None = None
    workloads: tuple[Workload, ...] | None = None  # instead of dataset / model

    @property
    def workload_list(self) -> tuple[Workload | None, ...]:
        """The workloads, or (None,): the study's one dataset and model."""
        return self.workloads or (None,)

    @property
    def datasets(self) -> tuple[str, ...]:
        """Every data set the study trains on."""
        if self.workloads:
            return tuple(dict.fromkeys(w.dataset for w in self.workloads))
        return (self.dataset,)

    @property
    def design(self) -> str:
        """How points are chosen: "grid" (also for lrs x weight_decays), "sobol", "random"."""
        return "grid" if self.space is None else self.space.design

    def entry_axes(self, opt: OptimizerSpec, workload: Workload | None = None) -> tuple[Axis, ...]:
        """The axes of one entry (on one workload), in order: the study's, each replaced by the
        workload's then the entry's axis of the same name, then the others they add; without a
        space, lr and weight decay."""
        if self.space is None:
            lrs = opt.lrs if opt.lrs is not None else self.lrs
            wds = opt.weight_decays if opt.weight_decays is not None else self.weight_decays
            assert lrs is not None and wds is not None, "load_study guarantees a grid"
            return (Axis("lr", "list", tuple(lrs)), Axis("weight_decay", "list", tuple(wds)))
        shared = merge_axes(self.space.axes, (workload.space or ()) if workload else ())
        return merge_axes(shared, opt.space or ())

    def entry_points(
        self, opt: OptimizerSpec, workload: Workload | None = None, stored: Stored | None = None
    ) -> list[Point]:
        """The points of one entry's space (all of a grid, the first `points` of a sequence);
        a sampled point the database already holds keeps its stored values (`stored`)."""
        space = self.space or Space()
        axes = self.entry_axes(opt, workload)
        points = design_points(axes, space.design, space.points, space.seed)
        if not stored or space.design == "grid":
            return points
        name = workload.name if workload else None
        return [Point(p.index, stored.get((name, opt.label, p.index), p.values)) for p in points]

    def variant_recipe(self, variant: str) -> Recipe:
        """The study recipe with one variant's overrides applied."""
        return dataclasses.replace(self.recipe, **self.variants[variant])

    def cells(self, stored: Stored | None = None) -> list[TrialConfig]:
        """Every cell, fully resolved: optimizer x variant x point x seed. `stored` holds the
        values of the sampled points a database already registered (by optimizer label and
        point index), so every launcher trains those values, whatever its scipy computes."""
        from robustbench_opt.optim.hyperparams import (  # the registry imports torch
            apply_values,
            entry_defaults,
            hyperparameters,
        )

        sampled = self.design != "grid"
        cells = []
        for workload, opt in itertools.product(self.workload_list, self.optimizers):
            hyper = hyperparameters(opt.name, opt.kwargs)
            defaults = entry_defaults(opt.name, opt.kwargs)
            points = self.entry_points(opt, workload, stored)
            study_recipe = self.recipe
            if workload is not None:
                study_recipe = dataclasses.replace(self.recipe, **workload.recipe)
            for variant in self.variants:
                base = dataclasses.replace(study_recipe, **self.variants[variant])
                if opt.epochs is not None:
                    base = dataclasses.replace(base, epochs=opt.epochs)
                for point in points:
                    optimizer_values = {k: v for k, v in point.values.items() if k in hyper}
                    recipe_values = {k: v for k, v in point.values.items() if k not in hyper}
                    recipe = dataclasses.replace(base, **recipe_values) if recipe_values else base
                    kwargs = apply_values(hyper, opt.kwargs, optimizer_values, defaults)
                    for seed in self.seeds:
                        cells.append(
                            TrialConfig(
                                dataset=workload.dataset if workload else self.dataset,
                                model=workload.model if workload else self.model,
                                optimizer=opt.name,
                                lr=float(point.values["lr"]),
                                weight_decay=float(point.values.get("weight_decay", 0.0)),
                                recipe=recipe,
                                optimizer_kwargs=kwargs,
                                seed=seed,
                                data_dir=self.data_dir,
                                download=self.download,
                                val_fraction=self.val_fraction,
                                variant=variant,
                                label=None if opt.label == opt.name else opt.label,
                                point=point.index if sampled else None,
                                axes=point.values,
                                workload=workload.name if workload else None,
                            )
                        )
        return cells

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-safe form: grids resolved to lists, every recipe field present."""
        return (
            {
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
                    "executor": self.resources.executor,
                },
                "max_concurrent": self.max_concurrent,
            }
            | ({} if self.space is None else {"space": self.space.to_dict()})
            | (
                {}
                if self.workloads is None
                else {"workloads": [w.to_dict() for w in self.workloads]}
            )
        )


def log_range(lo: float, hi: float, num: int) -> tuple[float, ...]:
    """`num` log-spaced values from lo to hi inclusive, rounded to 12 significant digits."""
    ratio = math.log(hi / lo)
    return tuple(float(f"{lo * math.exp(ratio * i / (num - 1)):.12g}") for i in range(num))


def canonical(value: Any) -> Any:
    """JSON-safe plain data with sorted mapping keys."""
    return json.loads(json.dumps(value, sort_keys=True))
