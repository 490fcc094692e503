"""The checkers of a study's search space (`space:` and `optimizers[i].space`).

An axis is written as a list of values, or a mapping with one of `range`, `log_range`,
`one_minus_log_range` ([lo, hi] in the axis's own units; `num` points for a grid) or `choices`.
What each axis may be (an optimizer hyperparameter with its valid range, or a recipe field
with its rule) is checked against the registries in `axes_fit`, once the study is read.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

from robustbench_opt.config import RECIPE_RULES
from robustbench_opt.space import DESIGNS, MAX_GRID_POINTS, RANGE_SCALES, Axis, grid_size
from robustbench_opt.space import is_power_of_two as power_of_two
from robustbench_opt.spec.checks import Source, integer, kind, mapping, number, positive_int
from robustbench_opt.spec.study import Space, StudySpec
from robustbench_opt.spec.yaml_lines import Key

SPACE_KEYS = ("design", "points", "seed", "axes")
AXIS_FORMS = (*RANGE_SCALES, "choices")
RECIPE_AXIS_KINDS = ("int", "float", "bool", "choice")  # tuple fields (augment) are not axes


def space(src: Source, value: Any, key: Key) -> Space:
    """The study's `space:` mapping: design, points, seed and the shared axes."""
    mapping(src, value, key, SPACE_KEYS)
    design = value.get("design", "grid")
    if design not in DESIGNS:
        raise src.error(
            key + ("design",),
            f"unknown design {design!r}; valid: {', '.join(DESIGNS)} (grid: every combination; "
            "sobol or random: a seeded sample of `points`)",
        )
    points = value.get("points")
    if design == "grid" and points is not None:
        raise src.error(
            key + ("points",), "a grid takes every combination; drop points, or set design: sobol"
        )
    if design != "grid":
        if points is None:
            raise src.error(key, f"a {design} design needs points: how many to sample; add it")
        points = positive_int(src, points, key + ("points",))
        if design == "sobol" and not power_of_two(points):
            lower = 2 ** int(math.log2(points))
            raise src.error(
                key + ("points",),
                f"{points} is not a power of two; a Sobol sample is balanced only with 2^m "
                f"points: use {lower} or {2 * lower}",
            )
    seed = integer(src, value.get("seed", 0), key + ("seed",))
    if seed < 0:
        raise src.error(key + ("seed",), f"expected a seed >= 0, got {seed}")
    return Space(design, points, seed, axes(src, value.get("axes", {}), key + ("axes",)))


def axes(src: Source, value: Any, key: Key) -> tuple[Axis, ...]:
    """A mapping of axis name -> axis form."""
    if not isinstance(value, dict):
        raise src.error(key, f"expected a mapping of axis name -> values, got {kind(value)}")
    return tuple(axis(src, name, form, key + (name,)) for name, form in value.items())


def axis(src: Source, name: str, value: Any, key: Key) -> Axis:
    """One axis: a list of values or {range|log_range|one_minus_log_range: [lo, hi], num} or
    {choices: [...]}."""
    if isinstance(value, list):
        return Axis(name, "list", _distinct(src, value, key))
    if not isinstance(value, dict):
        raise src.error(
            key,
            f"expected a list of values or a mapping with one of {', '.join(AXIS_FORMS)}, "
            f"got {kind(value)}",
        )
    mapping(src, value, key, (*AXIS_FORMS, "num"))
    forms = [form for form in AXIS_FORMS if form in value]
    if len(forms) != 1:
        raise src.error(key, f"give exactly one of {', '.join(AXIS_FORMS)}, got {forms or 'none'}")
    [form] = forms
    if form == "choices":
        if "num" in value:
            raise src.error(key + ("num",), "choices take no num; a grid takes every choice")
        return Axis(name, "choices", _distinct(src, value["choices"], key + ("choices",)))
    lo, hi = _ends(src, value[form], key + (form,), RANGE_SCALES[form])
    num = None
    if "num" in value:
        num = integer(src, value["num"], key + ("num",))
        if num < 2:
            raise src.error(key + ("num",), f"expected num >= 2, got {num}; or list one value")
    return Axis(name, RANGE_SCALES[form], low=lo, high=hi, num=num)


def _distinct(src: Source, value: Any, key: Key) -> tuple[Any, ...]:
    if not isinstance(value, list) or not value:
        raise src.error(key, f"expected a non-empty list, got {kind(value)}")
    for i, item in enumerate(value):
        if isinstance(item, (dict, list)) or item is None:
            raise src.error(key + (i,), f"expected a number, text or true/false, got {kind(item)}")
        if isinstance(item, float):
            number(src, item, key + (i,))
    if len(set(map(repr, value))) != len(value):
        raise src.error(key, f"duplicate values in {value}; list each value once")
    return tuple(value)


def _ends(src: Source, value: Any, key: Key, scale: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise src.error(key, f"expected [lo, hi], two numbers, got {kind(value)}")
    lo, hi = (number(src, v, key + (i,)) for i, v in enumerate(value))
    if lo >= hi:
        raise src.error(key, f"lo must be below hi, got [{lo:g}, {hi:g}]; swap or widen them")
    if scale == "log" and lo <= 0:
        raise src.error(
            key,
            f"a log range must stay above 0, got [{lo:g}, {hi:g}]; use a positive lo, or "
            "range for a linear scale",
        )
    if scale == "one_minus_log" and hi >= 1:
        raise src.error(
            key,
            f"a one_minus_log range puts 1 - x on a log scale, so hi must be below 1, got "
            f"[{lo:g}, {hi:g}]; use e.g. [0.9, 0.999]",
        )
    return lo, hi


def space_given(src: Source, spec: StudySpec) -> None:
    """A study sets lr and weight decay through lrs/weight_decays or through a space, not
    both; an entry's own space needs the study's (its design)."""
    if spec.space is None:
        for i, workload in enumerate(spec.workloads or ()):
            if workload.space is not None:
                raise src.error(
                    ("workloads", i, "space"),
                    "a workload's space needs the study's space (its design); add "
                    "space: {design: grid} at the top level",
                )
        for i, opt in enumerate(spec.optimizers):
            if opt.space is not None:
                raise src.error(
                    ("optimizers", i, "space"),
                    "an entry's space needs the study's space (its design); add "
                    "space: {design: grid} at the top level, or move these axes there",
                )
        return
    places = [("lrs",), ("weight_decays",)] + [
        ("optimizers", i, name)
        for i, opt in enumerate(spec.optimizers)
        for name in ("lrs", "weight_decays")
        if getattr(opt, name) is not None
    ]
    for place in places:
        if place in src.lines:
            raise src.error(
                place,
                "a study with a space sets lr and weight decay as its axes; move these values "
                f"into space.axes.{'lr' if place[-1] == 'lrs' else 'weight_decay'}",
            )


def axes_fit(src: Source, spec: StudySpec) -> None:
    """Each entry's axes against the registries: an optimizer hyperparameter it has (within
    its valid range) or a recipe field (within its rule); an lr axis; a grid of bounded
    size; ranges with num on a grid and without it on a sampled design (imports torch)."""
    if spec.space is None:
        return
    from robustbench_opt.optim.hyperparams import hyperparameters

    for (i, opt), workload in itertools.product(enumerate(spec.optimizers), spec.workload_list):
        entry: Key = ("optimizers", i)
        hyper = hyperparameters(opt.name, opt.kwargs)
        entry_axes = spec.entry_axes(opt, workload)
        for ax in entry_axes:
            where = _axis_key(src, entry, ax.name)
            if ax.name in hyper:
                if hyper[ax.name].keyword in opt.kwargs:
                    raise src.error(
                        where,
                        f"{ax.name} is both an axis and a fixed keyword of {opt.label} "
                        f"(kwargs.{hyper[ax.name].keyword}); keep one",
                    )
                spec_ = hyper[ax.name]
                _fits(src, where, ax, spec_.range_text(), spec_.admits, spec_.integer)
            elif ax.name in RECIPE_RULES and RECIPE_RULES[ax.name].kind in RECIPE_AXIS_KINDS:
                rule = RECIPE_RULES[ax.name]
                if ax.name == "epochs" and opt.epochs is not None:
                    raise src.error(
                        where, f"epochs is an axis and {opt.label}'s own epochs; keep one"
                    )
                if rule.kind in ("bool", "choice"):
                    _categorical(src, where, ax, rule.choices or (False, True))
                else:
                    _fits(src, where, ax, rule.expected, rule.within, rule.kind == "int")
            else:
                recipe = [n for n, r in RECIPE_RULES.items() if r.kind in RECIPE_AXIS_KINDS]
                raise src.error(
                    where,
                    f"{opt.label} ({opt.name}) has no hyperparameter {ax.name!r}; it has: "
                    f"{', '.join(hyper)}; recipe fields: {', '.join(recipe)}; move the axis to "
                    "the entries that have it (optimizers[i].space)",
                )
            if spec.design == "grid" and ax.scale in ("linear", "log", "one_minus_log"):
                if ax.num is None:
                    raise src.error(where, "a grid needs num for a range axis: how many values")
            elif spec.design != "grid" and ax.num is not None:
                raise src.error(where, f"num applies to grids; drop it for a {spec.design} design")
        if "lr" not in {ax.name for ax in entry_axes}:
            raise src.error(
                entry, f"{opt.label} has no lr axis; add lr to space.axes or to this entry's space"
            )
        if spec.design == "grid":
            size = grid_size(entry_axes)
            if size > MAX_GRID_POINTS:
                cells = size * len(spec.variants) * len(spec.seeds)
                raise src.error(
                    ("space",),
                    f"the grid of {opt.label} has {size} points ({cells} cells with variants and "
                    f"seeds), more than {MAX_GRID_POINTS}; sample it: design: sobol, points: 64",
                )


def mark_integers(spec: StudySpec) -> StudySpec:
    """The study with every axis over an integer setting (an int recipe field, or an integer
    optimizer keyword) marked `integer`, so its values are rounded (imports torch)."""
    if spec.space is None:
        return spec
    from robustbench_opt.optim.hyperparams import hyperparameters

    integers = {n for n, r in RECIPE_RULES.items() if r.kind == "int"}
    for opt in spec.optimizers:
        hyper = hyperparameters(opt.name, opt.kwargs)
        integers |= {name for name, h in hyper.items() if h.integer}

    def marked(axes_: tuple[Axis, ...]) -> tuple[Axis, ...]:
        return tuple(dataclasses.replace(a, integer=a.name in integers) for a in axes_)

    optimizers = tuple(
        opt if opt.space is None else dataclasses.replace(opt, space=marked(opt.space))
        for opt in spec.optimizers
    )
    workloads = spec.workloads and tuple(
        w if w.space is None else dataclasses.replace(w, space=marked(w.space))
        for w in spec.workloads
    )
    space_ = dataclasses.replace(spec.space, axes=marked(spec.space.axes))
    return dataclasses.replace(spec, space=space_, optimizers=optimizers, workloads=workloads)


def _axis_key(src: Source, entry: Key, name: str) -> Key:
    own = entry + ("space", name)
    return own if own in src.lines else ("space", "axes", name)  # (or a workload's: near it)


def _fits(src: Source, key: Key, ax: Axis, expected: str, ok: Any, integral: bool) -> None:
    values = ax.values if ax.scale in ("list", "choices") else (ax.low, ax.high)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise src.error(key, f"{ax.name} takes numbers, got {value!r}")
        if integral and float(value) != int(value):
            raise src.error(key, f"{ax.name} takes integers, got {value!r}")
        if not ok(value):
            raise src.error(key, f"{ax.name} must be {expected}, got {value!r}")


def _categorical(src: Source, key: Key, ax: Axis, choices: tuple[Any, ...]) -> None:
    if ax.scale not in ("list", "choices"):
        raise src.error(key, f"{ax.name} takes choices, not a range; list them")
    for value in ax.values:
        if value not in choices:
            valid = ", ".join(map(str, choices))
            raise src.error(key, f"{ax.name} must be one of {valid}, got {value!r}")
