"""The small checkers of study-file values.

Each checker takes (source, value, key path) and returns the value as the study holds it, or
raises a one-line UserError that names the file, the line, the key path, what is wrong and the
valid choices. `schema` says which checker each key gets.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

from robustbench_opt.config import RECIPE_RULES, Recipe
from robustbench_opt.errors import UserError, unknown
from robustbench_opt.rules import Rule
from robustbench_opt.spec.study import OptimizerSpec, StudySpec
from robustbench_opt.spec.study import log_range as spaced
from robustbench_opt.spec.yaml_lines import Key, dotted

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Source:
    """The study file being checked: its name and the line of every key path."""

    def __init__(self, where: str, lines: dict[Key, int]) -> None:
        self.where = where
        self.lines = lines

    def error(self, key: Key, message: str) -> UserError:
        """`FILE:LINE: key.path: message`, at the line of the key or of its nearest parent."""
        probe = key
        while probe and probe not in self.lines:
            probe = probe[:-1]
        line = self.lines.get(probe, 1)
        return UserError(f"{self.where}:{line}: {dotted(key)}: {message}")


Checker = Callable[[Source, Any, Key], Any]


def optional(check: Checker) -> Checker:
    """`check`, but None (an absent or null key) passes as None."""
    return lambda src, value, key: None if value is None else check(src, value, key)


def mapping(
    src: Source, value: Any, key: Key, allowed: tuple[str, ...], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A mapping with only `allowed` keys and every `required` one."""
    if not isinstance(value, dict):
        raise src.error(key, f"expected a mapping, got {kind(value)}")
    for name in value:
        if name not in allowed:
            raise src.error(key + (name,), str(unknown("key", name, allowed)))
    for name in required:
        if name not in value:
            raise src.error(key, f"missing required key {name!r}; add it (see the schema)")
    return value


# --- scalars ----------------------------------------------------------------------------------


def string(src: Source, value: Any, key: Key) -> str:
    if not isinstance(value, str) or not value:
        raise src.error(key, f"expected a non-empty string, got {kind(value)}")
    return value


def text(src: Source, value: Any, key: Key) -> str:
    if not isinstance(value, str):
        raise src.error(key, f"expected text, got {kind(value)}")
    return value


def study_name(src: Source, value: Any, key: Key) -> str:
    name = string(src, value, key)
    if not NAME_PATTERN.match(name):
        raise src.error(key, f"{name!r} is not a valid study name; use letters, digits, _ . -")
    return name


def boolean(src: Source, value: Any, key: Key) -> bool:
    if not isinstance(value, bool):
        raise src.error(key, f"expected true or false, got {kind(value)}")
    return value


def integer(src: Source, value: Any, key: Key) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise src.error(key, f"expected an integer, got {kind(value)}")
    return value


def positive_int(src: Source, value: Any, key: Key) -> int:
    if integer(src, value, key) < 1:
        raise src.error(key, f"expected an integer >= 1, got {value}")
    return value


def number(src: Source, value: Any, key: Key) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise src.error(key, f"expected a number, got {kind(value)}")
    if not math.isfinite(value):
        raise src.error(key, f"expected a finite number, got {value}")
    return float(value)


def fraction(src: Source, value: Any, key: Key) -> float:
    share = number(src, value, key)
    if not 0.0 <= share < 1.0:
        raise src.error(key, f"expected a fraction in [0, 1), got {value}")
    return share


def seeds(src: Source, value: Any, key: Key) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise src.error(key, f"expected a non-empty list of integers, got {kind(value)}")
    out = tuple(integer(src, v, key + (i,)) for i, v in enumerate(value))
    if min(out) < 0 or len(set(out)) != len(out):
        raise src.error(key, f"seeds must be distinct integers >= 0, got {list(out)}")
    return out


# --- grids ------------------------------------------------------------------------------------


def grid(positive: bool, ranged: Checker) -> Checker:
    """A list of values or a mapping checked by `ranged` ({log_range: [lo, hi], num: n});
    learning rates (`positive`) > 0, weight decays >= 0, no value twice."""

    def check(src: Source, value: Any, key: Key) -> tuple[float, ...]:
        if isinstance(value, dict):
            values = ranged(src, value, key)
        elif isinstance(value, list):
            values = tuple(number(src, v, key + (i,)) for i, v in enumerate(value))
        else:
            raise src.error(
                key, f"expected a list or {{log_range: [lo, hi], num: n}}, got {kind(value)}"
            )
        if not values:
            raise src.error(key, "empty grid; give at least one value")
        for i, v in enumerate(values):
            if positive and v <= 0:
                raise src.error(key + (i,), f"learning rate must be > 0, got {v}")
            if v < 0:
                raise src.error(key + (i,), f"weight decay must be >= 0, got {v}")
        if len(set(values)) != len(values):
            raise src.error(key, f"duplicate values in {list(values)}; list each value once")
        return values

    return check


def range_ends(src: Source, value: Any, key: Key) -> tuple[float, float]:
    """The [lo, hi] of a log range: two numbers > 0."""
    if not isinstance(value, list) or len(value) != 2:
        raise src.error(key, "expected [lo, hi], two positive numbers")
    lo, hi = (number(src, v, key + (i,)) for i, v in enumerate(value))
    if lo <= 0 or hi <= 0:
        raise src.error(key, f"ends must be > 0 for a log range, got {value}")
    return lo, hi


def range_num(src: Source, value: Any, key: Key) -> int:
    """How many values a log range has: at least 2."""
    num = integer(src, value, key)
    if num < 2:
        raise src.error(key, f"expected num >= 2, got {num}; or list one value")
    return num


def log_spaced(log_range: tuple[float, float], num: int) -> tuple[float, ...]:
    """The values of a checked {log_range: [lo, hi], num: n}."""
    return spaced(*log_range, num)


# --- the recipe, from config.RECIPE_RULES -----------------------------------------------------


def recipe(src: Source, value: Any, key: Key) -> Recipe:
    """The study recipe: Recipe fields over their defaults."""
    return Recipe(**recipe_overrides(src, value, key))


def recipe_overrides(src: Source, value: Any, key: Key) -> dict[str, Any]:
    """Recipe fields, each of its rule's kind and within its valid values."""
    if value is None:
        value = {}
    mapping(src, value, key, tuple(RECIPE_RULES))
    out = {name: _of_kind(src, RECIPE_RULES[name], v, key + (name,)) for name, v in value.items()}
    for name, v in out.items():
        bad = RECIPE_RULES[name].violation(v)
        if bad is not None:
            index, problem = bad
            raise src.error(key + (name,) + ((index,) if index is not None else ()), problem)
    return out


_SCALARS: dict[str, Checker] = {"bool": boolean, "int": integer, "float": number, "choice": string}


def _of_kind(src: Source, rule: Rule, value: Any, key: Key) -> Any:
    """`value` as the rule's kind. A choice is checked against its choices here ("unknown
    value"); a tuple's choices, like every bound, by the rule's `violation` after."""
    if value is None and rule.optional:
        return None
    if rule.kind == "tuple":
        if not isinstance(value, list):
            raise src.error(key, f"expected a list, got {kind(value)}")
        assert rule.item is not None
        return tuple(_SCALARS[rule.item](src, v, key + (i,)) for i, v in enumerate(value))
    if rule.kind == "choice":
        if value not in rule.choices:
            raise src.error(key, str(unknown("value", value, rule.choices)))
        return value
    return _SCALARS[rule.kind](src, value, key)


def variants(src: Source, value: Any, key: Key) -> dict[str, dict[str, Any]]:
    """Named recipe overrides; none given is one variant, "default", with none."""
    if value is None:
        return {"default": {}}
    if not isinstance(value, dict) or not value:
        raise src.error(key, f"expected a non-empty mapping, got {kind(value)}")
    out = {}
    for name, overrides in value.items():
        if not NAME_PATTERN.match(name):
            raise src.error(
                key + (name,), f"{name!r} is not a valid variant name; use letters, digits, _ . -"
            )
        out[name] = recipe_overrides(src, overrides, key + (name,))
    return out


# --- optimizers -------------------------------------------------------------------------------


def optimizers(entry: Checker) -> Checker:
    """A non-empty list of entries, each a registry name or a mapping checked by `entry`, with
    distinct labels."""

    def check(src: Source, value: Any, key: Key) -> tuple[OptimizerSpec, ...]:
        if not isinstance(value, list) or not value:
            raise src.error(key, f"expected a non-empty list, got {kind(value)}")
        out: list[OptimizerSpec] = []
        seen: dict[str, int] = {}
        for i, item in enumerate(value):
            if isinstance(item, str):
                opt = OptimizerSpec(name=string(src, item, key + (i,)), label=item)
            else:
                opt = entry(src, item, key + (i,))
            if opt.label in seen:
                raise src.error(
                    key + (i,),
                    f"label {opt.label!r} already used by optimizers[{seen[opt.label]}]; "
                    "give each entry a distinct label",
                )
            seen[opt.label] = i
            out.append(opt)
        return tuple(out)

    return check


def optimizer_kwargs(src: Source, value: Any, key: Key) -> dict[str, Any]:
    """Fixed optimizer keywords (checked against the registry by `registries`)."""
    value = value or {}
    if not isinstance(value, dict):
        raise src.error(key, f"expected a mapping, got {kind(value)}")
    return value


def grids_given(src: Source, spec: StudySpec) -> None:
    """Every optimizer entry has an lr grid and a weight-decay grid, its own or the study's."""
    for i, opt in enumerate(spec.optimizers):
        if opt.lrs is None and spec.lrs is None:
            raise src.error(
                ("optimizers", i), "no learning rates; set lrs on this entry or at the top level"
            )
        if opt.weight_decays is None and spec.weight_decays is None:
            raise src.error(
                ("optimizers", i),
                "no weight decays; set weight_decays on this entry or at the top level",
            )


def registries(src: Source, spec: StudySpec) -> None:
    """Names and optimizer keywords checked against the registries (imports torch)."""
    import torch

    from robustbench_opt.data import DATASETS
    from robustbench_opt.datasets import check_augmentation, dataset_info
    from robustbench_opt.models import check_fits, model_names
    from robustbench_opt.optim import build_optimizer, get_info

    for i, workload in enumerate(spec.workload_list):
        at: Key = () if workload is None else ("workloads", i)
        dataset = spec.dataset if workload is None else workload.dataset
        model = spec.model if workload is None else workload.model
        if dataset not in DATASETS:
            raise src.error(at + ("dataset",), str(unknown("dataset", dataset, DATASETS)))
        if model not in model_names():
            raise src.error(at + ("model",), str(unknown("model", model, model_names())))
        shape = dataset_info(dataset).shape
        try:
            check_fits(model, shape, dataset)
        except UserError as err:
            raise src.error(at + ("model",), str(err)) from None
        base = (
            spec.recipe if workload is None else dataclasses.replace(spec.recipe, **workload.recipe)
        )
        for variant in spec.variants.values():
            recipe = dataclasses.replace(base, **variant)
            try:
                check_augmentation(dataset, shape, recipe.augment, recipe.cutmix_prob)
            except UserError as err:
                raise src.error(at + ("recipe",) if workload else ("recipe",), str(err)) from None
    for i, opt in enumerate(spec.optimizers):
        key: Key = ("optimizers", i)
        name_key = key + ("name",) if key + ("name",) in src.lines else key
        try:
            get_info(opt.name)
        except UserError as err:
            raise src.error(name_key, str(err)) from None
        if spec.space is None:
            lr, wd = (opt.lrs or spec.lrs or ())[0], max(opt.weight_decays or spec.weight_decays)
        else:  # the axes' values are checked by space_checks.axes_fit
            lr, wd = 1e-3, 0.0
        probe = torch.zeros(1, requires_grad=True)  # the keywords are checked by building
        try:
            build_optimizer([probe], opt.name, lr, wd, opt.kwargs)
        except (UserError, TypeError, ValueError) as err:
            kwargs_key = key + ("kwargs",) if key + ("kwargs",) in src.lines else key
            raise src.error(kwargs_key, " ".join(str(err).split())) from None


# --- resources --------------------------------------------------------------------------------


def cpus(src: Source, value: Any, key: Key) -> float | str:
    """CPUs (threads) per trial, or "auto" (the run measures which split of the CPUs is fastest)."""
    if value == "auto":
        return value
    if isinstance(value, str):
        raise src.error(key, f"expected cpus > 0 or auto, got {value!r}")
    count = number(src, value, key)
    if count <= 0:
        raise src.error(key, f"expected cpus > 0, got {count}")
    return count


def gpus(src: Source, value: Any, key: Key) -> float | str:
    """0 (CPU only), a GPU fraction in (0, 1], or "auto"."""
    if value == "auto":
        return value
    wrong = f"expected 0 (CPU), a GPU fraction in (0, 1] or auto, got {value!r}"
    if isinstance(value, str):
        raise src.error(key, wrong)
    share = number(src, value, key)
    if share != 0.0 and not 0.0 < share <= 1.0:
        raise src.error(key, wrong)
    return share


def packing(src: Source, value: Any, key: Key) -> int | str:
    """ "auto", "off", or the most cells per pack."""
    if value in ("auto", "off") or (
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
    ):
        return value
    raise src.error(
        key, f"expected auto, off or the most cells per pack (an integer >= 1), got {value!r}"
    )


EXECUTORS = ("auto", "local", "ray")  # `resources.executor`


def executor(src: Source, value: Any, key: Key) -> str:
    """Who trains the trials: "local" (worker processes the driver forks, on this machine
    only), "ray" (Ray workers) or "auto" (local for CPU trials on this machine, else Ray)."""
    if value in EXECUTORS:
        return value
    raise src.error(key, f"expected one of {', '.join(EXECUTORS)}, got {value!r}")


def kind(value: Any) -> str:
    """A value and its type, for messages: `'ten' (str)`, `nothing (null)`."""
    if value is None:
        return "nothing (null)"
    return f"{value!r} ({type(value).__name__})"
