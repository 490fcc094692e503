"""Study files: schema, validation on load, and expansion into grid cells.

A study file is YAML. Every key except `name`, `dataset`, `model` and `optimizers` is optional::

    name: my_study               # required; the study's name in the results database
    description: free text
    dataset: digits              # robustbench_opt.data.DATASETS: digits, cifar10, cifar100
    data_dir: data/cifar10       # CIFAR: directory with the torchvision files (relative to the cwd)
    download: false              # CIFAR: allow downloading into data_dir
    val_fraction: 0.0            # share of the training split held out for validation, in [0, 1)
    model: simple_cnn            # robustbench_opt.models.model_names()
    recipe:                      # any robustbench_opt.config.Recipe field; others keep defaults
      epochs: 10
      schedule: cosine
    variants:                    # named recipe overrides (ablations); default: "default": {}
      baseline: {}
      trivialaugment: {augment: [crop_flip, trivialaugment]}
    optimizers:                  # a registry name, or a mapping:
      - adam
      - name: sam                # registry name (robustbench-opt optimizers lists them)
        label: sam_adam          # display name, unique in the study (default: name)
        kwargs: {base: adam, rho: 0.05}   # fixed optimizer keywords
        lrs: [1.0e-3]            # own grid, replaces the study's lrs for this entry
        weight_decays: [0.0]     # own grid, replaces the study's weight_decays
        epochs: 50               # own epoch budget, replaces recipe.epochs (all variants)
    lrs: [0.1, 0.01, 0.001]      # a list, or log-spaced: {log_range: [1.0e-4, 1.0e-1], num: 4}
    weight_decays: [0.0, 5.0e-4]
    seeds: [0, 1]                # default [0]
    resources: {cpus: 1, gpus: 0, packing: auto}   # per trial; gpus: 0 (CPU), a fraction in
                                 # (0, 1], or auto; packing: auto | off | most cells per trial
    max_concurrent: 4            # at most this many trials at once (default: as resources allow)

Grid cells are optimizer x variant x lr x weight decay x seed. Numbers such as `1e-3` are read as
floats (plain YAML 1.1 would read them as strings). Every error is one line: file, line, key path,
what is wrong and the valid choices.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from robustbench_opt.config import RECIPE_RULES, Recipe, TrialConfig, recipe_identity
from robustbench_opt.errors import UserError, unknown

Key = tuple[str | int, ...]

TOP_KEYS = (
    "name",
    "description",
    "dataset",
    "data_dir",
    "download",
    "val_fraction",
    "model",
    "recipe",
    "variants",
    "optimizers",
    "lrs",
    "weight_decays",
    "seeds",
    "resources",
    "max_concurrent",
)
REQUIRED_KEYS = ("name", "dataset", "model", "optimizers")
OPTIMIZER_KEYS = ("name", "label", "kwargs", "lrs", "weight_decays", "epochs")
RESOURCE_KEYS = ("cpus", "gpus", "packing")
RANGE_KEYS = ("log_range", "num")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
            "kwargs": _canonical(self.kwargs),
            "lrs": None if self.lrs is None else list(self.lrs),
            "weight_decays": None if self.weight_decays is None else list(self.weight_decays),
            "epochs": self.epochs,
        }


@dataclass(frozen=True)
class Resources:
    """What one trial asks the scheduler for."""

    cpus: float = 1.0
    gpus: float | Literal["auto"] = 0.0  # 0 = CPU only; "auto" = runner.memory decides
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
            "variants": {k: _canonical(v) for k, v in self.variants.items()},
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


# Study keys that change how or where a study runs, not what it measures: editing them does not
# make a different study.
RUN_ONLY_KEYS: tuple[str, ...] = (
    "description",
    "data_dir",
    "download",
    "resources",
    "max_concurrent",
)


def identity(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of `StudySpec.to_dict()` that defines what a study measures.

    Identity is what is measured (see `robustbench_opt.config`): the run-only keys and the
    recipe's speed switches (in the recipe and in every variant) are left out.
    """
    out = {k: v for k, v in spec.items() if k not in RUN_ONLY_KEYS}
    if "recipe" in out:
        out["recipe"] = recipe_identity(out["recipe"])
    if "variants" in out:
        out["variants"] = {
            name: recipe_identity(overrides, overrides=True)
            for name, overrides in out["variants"].items()
        }
    return out


def load_study(path: str | Path) -> StudySpec:
    """Reads and validates a study file; any problem is a one-line UserError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"study file '{path}' not found; check the path") from None
    except OSError as err:
        raise UserError(f"cannot read study file '{path}': {err.strerror}") from None
    data, lines = _parse_yaml(text, str(path))
    return _Validator(str(path), lines).study(data)


def diff_specs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human lines for what changed between two `StudySpec.to_dict()` results."""
    lines: list[str] = []
    _diff(_keyed(old), _keyed(new), "", lines)
    old_labels = [o["label"] for o in old.get("optimizers") or []]
    new_labels = [o["label"] for o in new.get("optimizers") or []]
    if set(old_labels) == set(new_labels) and old_labels != new_labels:
        lines.append(f"optimizers: order {', '.join(old_labels)} -> {', '.join(new_labels)}")
    return lines


# --- YAML with line numbers -------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` (no dot) as a float, as users expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str, where: str) -> tuple[Any, dict[Key, int]]:
    """Plain Python data plus the 1-based line of every key path."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise UserError(f"{where}: the study file is empty; see the schema in the README")
        lines: dict[Key, int] = {}
        data = _construct(loader, node, (), lines, where)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(f"{err.context or ''} {err.problem or ''}".split())
        at = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
        raise UserError(f"{where}:{at}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{where}: YAML error: {' '.join(str(err).split())}") from None
    finally:
        loader.dispose()
    return data, lines


def _construct(
    loader: _Loader, node: yaml.Node, key: Key, lines: dict[Key, int], where: str
) -> Any:
    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            name = loader.construct_object(knode, deep=True)
            line = knode.start_mark.line + 1
            if not isinstance(name, str):
                raise UserError(f"{where}:{line}: key {name!r} must be a string")
            if name in out:
                raise UserError(
                    f"{where}:{line}: {_dotted(key + (name,))}: duplicate key; "
                    f"first given on line {lines[key + (name,)]}; keep one"
                )
            lines[key + (name,)] = line
            out[name] = _construct(loader, vnode, key + (name,), lines, where)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, v, key + (i,), lines, where) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _dotted(key: Key) -> str:
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


# --- validation -------------------------------------------------------------------------------


class _Validator:
    """Turns parsed YAML into a StudySpec; errors name the file, line and key path."""

    def __init__(self, where: str, lines: dict[Key, int]) -> None:
        self.where = where
        self.lines = lines

    def error(self, key: Key, message: str) -> UserError:
        probe = key
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe, 1)
        return UserError(f"{self.where}:{line}: {_dotted(key)}: {message}")

    def study(self, data: Any) -> StudySpec:
        top = self.mapping(data, (), TOP_KEYS, REQUIRED_KEYS)
        name = self.string(top["name"], ("name",))
        if not NAME_PATTERN.match(name):
            raise self.error(
                ("name",), f"{name!r} is not a valid study name; use letters, digits, _ . -"
            )
        recipe = self.recipe(top.get("recipe", {}), ("recipe",), Recipe())
        variants = self.variants(top.get("variants"))
        lrs = self.optional_grid(top, (), "lrs")
        wds = self.optional_grid(top, (), "weight_decays")
        optimizers = self.optimizers(top["optimizers"], lrs, wds)
        spec = StudySpec(
            name=name,
            description=self.text(top.get("description", ""), ("description",)),
            dataset=self.string(top["dataset"], ("dataset",)),
            data_dir=self.optional(top.get("data_dir"), ("data_dir",), self.string),
            download=self.boolean(top.get("download", False), ("download",)),
            val_fraction=self.fraction(top.get("val_fraction", 0.0), ("val_fraction",)),
            model=self.string(top["model"], ("model",)),
            recipe=recipe,
            variants=variants,
            optimizers=optimizers,
            lrs=lrs,
            weight_decays=wds,
            seeds=self.seeds(top.get("seeds", [0]), ("seeds",)),
            resources=self.resources(top.get("resources", {}), ("resources",)),
            max_concurrent=self.optional(
                top.get("max_concurrent"), ("max_concurrent",), self.positive_int
            ),
        )
        self.registries(spec)
        return spec

    # structure

    def mapping(
        self, value: Any, key: Key, allowed: tuple[str, ...], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(key, f"expected a mapping, got {_kind(value)}")
        for name in value:
            if name not in allowed:
                raise self.error(key + (name,), str(unknown("key", name, allowed)))
        for name in required:
            if name not in value:
                raise self.error(key, f"missing required key {name!r}; add it (see the schema)")
        return value

    def optional(self, value: Any, key: Key, check: Callable[[Any, Key], Any]) -> Any:
        return None if value is None else check(value, key)

    # scalars

    def string(self, value: Any, key: Key) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(key, f"expected a non-empty string, got {_kind(value)}")
        return value

    def text(self, value: Any, key: Key) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected text, got {_kind(value)}")
        return value

    def boolean(self, value: Any, key: Key) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_kind(value)}")
        return value

    def integer(self, value: Any, key: Key) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_kind(value)}")
        return value

    def positive_int(self, value: Any, key: Key) -> int:
        if self.integer(value, key) < 1:
            raise self.error(key, f"expected an integer >= 1, got {value}")
        return value

    def number(self, value: Any, key: Key) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"expected a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {value}")
        return float(value)

    def fraction(self, value: Any, key: Key) -> float:
        number = self.number(value, key)
        if not 0.0 <= number < 1.0:
            raise self.error(key, f"expected a fraction in [0, 1), got {value}")
        return number

    # grids

    def optional_grid(
        self, parent: dict[str, Any], key: Key, name: str
    ) -> tuple[float, ...] | None:
        """The lrs (> 0) or weight_decays (>= 0) grid under `parent`, if given."""
        positive = name == "lrs"
        return self.optional(
            parent.get(name), key + (name,), lambda v, k: self.grid(v, k, positive)
        )

    def grid(self, value: Any, key: Key, positive: bool) -> tuple[float, ...]:
        """A list of values or {log_range: [lo, hi], num: n}; lr > 0, weight decay >= 0."""
        if isinstance(value, dict):
            values = self.log_range(value, key)
        elif isinstance(value, list):
            values = tuple(self.number(v, key + (i,)) for i, v in enumerate(value))
        else:
            raise self.error(
                key, f"expected a list or {{log_range: [lo, hi], num: n}}, got {_kind(value)}"
            )
        if not values:
            raise self.error(key, "empty grid; give at least one value")
        for i, v in enumerate(values):
            if positive and v <= 0:
                raise self.error(key + (i,), f"learning rate must be > 0, got {v}")
            if v < 0:
                raise self.error(key + (i,), f"weight decay must be >= 0, got {v}")
        if len(set(values)) != len(values):
            raise self.error(key, f"duplicate values in {list(values)}; list each value once")
        return values

    def log_range(self, value: dict[str, Any], key: Key) -> tuple[float, ...]:
        self.mapping(value, key, RANGE_KEYS, RANGE_KEYS)
        ends = value["log_range"]
        if not isinstance(ends, list) or len(ends) != 2:
            raise self.error(key + ("log_range",), "expected [lo, hi], two positive numbers")
        lo, hi = (self.number(v, key + ("log_range", i)) for i, v in enumerate(ends))
        if lo <= 0 or hi <= 0:
            raise self.error(key + ("log_range",), f"ends must be > 0 for a log range, got {ends}")
        num = self.integer(value["num"], key + ("num",))
        if num < 2:
            raise self.error(key + ("num",), f"expected num >= 2, got {num}; or list one value")
        return log_range(lo, hi, num)

    def seeds(self, value: Any, key: Key) -> tuple[int, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a non-empty list of integers, got {_kind(value)}")
        seeds = tuple(self.integer(v, key + (i,)) for i, v in enumerate(value))
        if min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise self.error(key, f"seeds must be distinct integers >= 0, got {list(seeds)}")
        return seeds

    # sections

    def recipe(self, value: Any, key: Key, base: Recipe) -> Recipe:
        overrides = self.recipe_overrides(value, key)
        return dataclasses.replace(base, **overrides)

    def recipe_overrides(self, value: Any, key: Key) -> dict[str, Any]:
        if value is None:
            value = {}
        self.mapping(value, key, tuple(_RECIPE_TYPES))
        out = {name: self.typed(v, key + (name,), _RECIPE_TYPES[name]) for name, v in value.items()}
        for name, v in out.items():
            bad = RECIPE_RULES[name].violation(v) if name in RECIPE_RULES else None
            if bad is not None:
                index, problem = bad
                raise self.error(key + (name,) + ((index,) if index is not None else ()), problem)
        return out

    def typed(self, value: Any, key: Key, hint: Any) -> Any:
        """Checks a value against a Recipe field's type hint."""
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            (inner,) = [a for a in args if a is not type(None)]
            return self.typed(value, key, inner)
        if origin is Literal:
            if value not in args:
                raise self.error(key, str(unknown("value", value, args)))
            return value
        if origin is tuple:
            if not isinstance(value, list):
                raise self.error(key, f"expected a list, got {_kind(value)}")
            return tuple(self.typed(v, key + (i,), args[0]) for i, v in enumerate(value))
        checks = {bool: self.boolean, int: self.integer, float: self.number, str: self.string}
        return checks[hint](value, key)

    def variants(self, value: Any) -> dict[str, dict[str, Any]]:
        if value is None:
            return {"default": {}}
        if not isinstance(value, dict) or not value:
            raise self.error(("variants",), f"expected a non-empty mapping, got {_kind(value)}")
        out = {}
        for name, overrides in value.items():
            key = ("variants", name)
            if not NAME_PATTERN.match(name):
                raise self.error(
                    key, f"{name!r} is not a valid variant name; use letters, digits, _ . -"
                )
            out[name] = self.recipe_overrides(overrides, key)
        return out

    def optimizers(
        self, value: Any, lrs: tuple[float, ...] | None, wds: tuple[float, ...] | None
    ) -> tuple[OptimizerSpec, ...]:
        if not isinstance(value, list) or not value:
            raise self.error(("optimizers",), f"expected a non-empty list, got {_kind(value)}")
        out: list[OptimizerSpec] = []
        seen: dict[str, int] = {}
        for i, entry in enumerate(value):
            key: Key = ("optimizers", i)
            opt = self.optimizer(entry, key)
            if opt.label in seen:
                raise self.error(
                    key,
                    f"label {opt.label!r} already used by optimizers[{seen[opt.label]}]; "
                    "give each entry a distinct label",
                )
            seen[opt.label] = i
            if opt.lrs is None and lrs is None:
                raise self.error(
                    key, "no learning rates; set lrs on this entry or at the top level"
                )
            if opt.weight_decays is None and wds is None:
                raise self.error(
                    key, "no weight decays; set weight_decays on this entry or at the top level"
                )
            out.append(opt)
        return tuple(out)

    def optimizer(self, entry: Any, key: Key) -> OptimizerSpec:
        if isinstance(entry, str):
            return OptimizerSpec(name=self.string(entry, key), label=entry)
        self.mapping(entry, key, OPTIMIZER_KEYS, ("name",))
        name = self.string(entry["name"], key + ("name",))
        kwargs = entry.get("kwargs") or {}
        if not isinstance(kwargs, dict):
            raise self.error(key + ("kwargs",), f"expected a mapping, got {_kind(kwargs)}")
        return OptimizerSpec(
            name=name,
            label=self.string(entry.get("label", name), key + ("label",)),
            kwargs=kwargs,
            lrs=self.optional_grid(entry, key, "lrs"),
            weight_decays=self.optional_grid(entry, key, "weight_decays"),
            epochs=self.optional(entry.get("epochs"), key + ("epochs",), self.positive_int),
        )

    def resources(self, value: Any, key: Key) -> Resources:
        self.mapping(value, key, RESOURCE_KEYS)
        cpus = self.number(value.get("cpus", 1.0), key + ("cpus",))
        if cpus <= 0:
            raise self.error(key + ("cpus",), f"expected cpus > 0, got {cpus}")
        gpus = value.get("gpus", 0.0)
        if gpus != "auto":
            gpus = self.number(gpus, key + ("gpus",)) if not isinstance(gpus, str) else -1.0
            if gpus != 0.0 and not 0.0 < gpus <= 1.0:
                raise self.error(
                    key + ("gpus",),
                    f"expected 0 (CPU), a GPU fraction in (0, 1] or auto, got {value['gpus']!r}",
                )
        packing = value.get("packing", "auto")
        if packing not in ("auto", "off") and not (
            isinstance(packing, int) and not isinstance(packing, bool) and packing >= 1
        ):
            raise self.error(
                key + ("packing",),
                f"expected auto, off or the most cells per pack (an integer >= 1), got {packing!r}",
            )
        return Resources(cpus=cpus, gpus=gpus, packing=packing)

    def registries(self, spec: StudySpec) -> None:
        """Names and optimizer keywords checked against the registries (imports torch)."""
        import torch

        from robustbench_opt.data import DATASETS
        from robustbench_opt.models import model_names
        from robustbench_opt.optim import build_optimizer, get_info

        if spec.dataset not in DATASETS:
            raise self.error(("dataset",), str(unknown("dataset", spec.dataset, DATASETS)))
        if spec.model not in model_names():
            raise self.error(("model",), str(unknown("model", spec.model, model_names())))
        for i, opt in enumerate(spec.optimizers):
            key: Key = ("optimizers", i)
            name_key = key + ("name",) if key + ("name",) in self.lines else key
            try:
                get_info(opt.name)
            except UserError as err:
                raise self.error(name_key, str(err)) from None
            lrs = opt.lrs or spec.lrs or ()
            wds = opt.weight_decays or spec.weight_decays or ()
            probe = torch.zeros(1, requires_grad=True)  # the keywords are checked by building
            try:
                build_optimizer([probe], opt.name, lrs[0], max(wds), opt.kwargs)
            except (UserError, TypeError, ValueError) as err:
                kwargs_key = key + ("kwargs",) if key + ("kwargs",) in self.lines else key
                raise self.error(kwargs_key, " ".join(str(err).split())) from None


def log_range(lo: float, hi: float, num: int) -> tuple[float, ...]:
    """`num` log-spaced values from lo to hi inclusive, rounded to 12 significant digits."""
    ratio = math.log(hi / lo)
    return tuple(float(f"{lo * math.exp(ratio * i / (num - 1)):.12g}") for i in range(num))


_RECIPE_TYPES: dict[str, Any] = typing.get_type_hints(Recipe)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{value!r} ({type(value).__name__})"


def _canonical(value: Any) -> Any:
    """JSON-safe plain data with sorted mapping keys."""
    return json.loads(json.dumps(value, sort_keys=True))


def _keyed(value: Any) -> Any:
    """Lists of optimizer entries become mappings by label, so diffs name entries."""
    if isinstance(value, dict):
        return {k: _keyed(v) for k, v in value.items()}
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and "label" in v for v in value)
    ):
        return {v["label"]: _keyed(v) for v in value}
    return value


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                out.append(f"{path or '(top level)'}: - {key}")
        for key in new:
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{path or '(top level)'}: + {key}")
            else:
                _diff(old[key], new[key], sub, out)
    elif old != new:
        out.append(f"{path}: {json.dumps(old)} -> {json.dumps(new)}")
