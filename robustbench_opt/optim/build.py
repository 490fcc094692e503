"""Build an optimizer from a registry name, checking every keyword against its entry."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from robustbench_opt.config import WEIGHT_DECAY_PARAMS
from robustbench_opt.errors import UserError, closest, unknown
from robustbench_opt.optim.registry import (
    BASE_KEYWORD,
    GRID_KEYWORDS,
    OptimizerInfo,
    get_info,
    signature_keywords,
)

Params = Iterable[torch.Tensor] | Iterable[dict[str, Any]]
NO_DECAY = "no_weight_decay"  # param group key: weight decay stays 0 in this group


@dataclass
class BuiltOptimizer:
    """An optimizer with the entry it came from and the keywords it was really given.

    `kwargs` holds every keyword besides lr and weight_decay (defaults, user values and pinned
    flags); two-pass entries record `base` as the base's registry name. `info.weight_decay_mode`
    is concrete: a SAM-family optimizer reports its base's mode.
    """

    optimizer: torch.optim.Optimizer
    info: OptimizerInfo
    kwargs: dict[str, Any]


def build_optimizer(
    params: Params,
    name: str,
    lr: float,
    weight_decay: float,
    kwargs: Mapping[str, Any] | None = None,
) -> BuiltOptimizer:
    """Build optimizer `name` over `params`; unknown or pinned keywords are a UserError."""
    info = get_info(name)
    _check_number("lr", lr)
    _check_number("weight_decay", weight_decay)
    given = dict(kwargs or {})
    if not info.two_pass:
        _check_keywords(info, given, info.hyperparams, info.pinned)
        resolved = _resolve(info, given)
        optimizer = _construct(info, params, lr, weight_decay, resolved)
        return BuiltOptimizer(optimizer, info, resolved)

    return _build_wrapper(info, params, lr, weight_decay, given)


def _build_wrapper(
    info: OptimizerInfo, params: Params, lr: float, weight_decay: float, given: dict[str, Any]
) -> BuiltOptimizer:
    """A two-pass entry over its base: own keywords (base, rho) plus the base's, flat."""
    base = get_info(str(given.get(BASE_KEYWORD, info.defaults[BASE_KEYWORD])))
    if base.two_pass:
        raise UserError(
            f"{info.name!r} cannot wrap the two-pass optimizer {base.name!r}; "
            f"give a one-pass base, e.g. {BASE_KEYWORD}: momentum"
        )
    own_given = {k: v for k, v in given.items() if k in info.hyperparams}
    base_given = {k: v for k, v in given.items() if k not in info.hyperparams}
    pinned_in_base = {k: v for k, v in base_given.items() if k in base.pinned}
    _check_keywords(base, pinned_in_base, base.hyperparams, base.pinned)
    valid = info.hyperparams + tuple(k for k in base.hyperparams if k not in info.hyperparams)
    _check_keywords(info, given, valid, info.pinned)
    own = _resolve(info, own_given)
    own.pop(BASE_KEYWORD)
    base_kwargs = _resolve(base, base_given)
    wrapper_keys = signature_keywords(info.factory)
    clashes = [k for k, v in base_kwargs.items() if k in wrapper_keys and v is not None]
    if clashes:
        raise UserError(
            f"{info.name!r} cannot wrap {base.name!r}: its keyword {clashes[0]!r} clashes with "
            "the wrapper's own; choose another base"
        )
    base_kwargs = {k: v for k, v in base_kwargs.items() if k not in wrapper_keys}  # None only
    built_info = dataclasses.replace(
        info,
        weight_decay_mode=base.weight_decay_mode,
        accepts_weight_decay=base.accepts_weight_decay,
    )
    passed = {"base_optimizer": base.factory, **own, **base_kwargs}
    optimizer = _construct(built_info, params, lr, weight_decay, passed)
    return BuiltOptimizer(optimizer, built_info, {BASE_KEYWORD: base.name, **own, **base_kwargs})


def param_groups(model: torch.nn.Module, policy: str) -> list[dict[str, Any]]:
    """The model's parameters as groups for a `weight_decay_params` policy.

    "all": one group, every parameter decays (BatchNorm weights and biases included).
    "no_norm_bias": nanoGPT's explicit groups: tensors with ndim >= 2 (conv and linear weights)
    decay; the rest (biases, norm weights) get weight decay 0, also when it is set later.
    """
    params = list(model.parameters())
    if policy == "all":
        return [{"params": params}]
    if policy == "no_norm_bias":
        groups = [
            {"params": [p for p in params if p.ndim >= 2]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, NO_DECAY: True},
        ]
        return [g for g in groups if g["params"]]
    raise unknown(
        "weight-decay parameter policy",
        policy,
        WEIGHT_DECAY_PARAMS,
        "set weight_decay_params to one of these",
        ("weight_decay_params",),
    )


def set_weight_decay(built: BuiltOptimizer, value: float) -> None:
    """Set weight decay on every param group that decays (a SAM wrapper shares its groups with
    the base); groups built without decay (`param_groups`) keep 0."""
    _check_number("weight_decay", value)
    if value and not built.info.accepts_weight_decay:
        raise UserError(f"optimizer {built.info.name!r} has no weight_decay; use 0")
    for group in built.optimizer.param_groups:
        if not group.get(NO_DECAY, False):
            group["weight_decay"] = value


def _check_number(what: str, value: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise UserError(f"{what} must be a finite number >= 0, got {value!r}; fix the study grid")


def _check_keywords(
    info: OptimizerInfo, given: Mapping[str, Any], valid: tuple[str, ...], pinned: Mapping[str, Any]
) -> None:
    name = info.name
    factory = f"{info.factory.__module__}:{info.factory.__qualname__}"
    for key in given:
        if key in GRID_KEYWORDS:
            raise UserError(
                f"{key!r} is not an optimizer keyword of {name!r}; it comes from the study grid "
                "(lr / weight_decay axes); remove it from the optimizer's kwargs"
            )
        if key in pinned:
            raise UserError(
                f"keyword {key!r} of optimizer {name!r} is pinned to {pinned[key]!r}; remove it, "
                f"or use {factory!r} as the optimizer to set it yourself"
            )
        if key not in valid:
            hint = closest(key, valid)
            raise UserError(
                f"unknown keyword {key!r} for optimizer {name!r}; "
                + (f"did you mean {hint!r}? " if hint else "")
                + "valid: "
                + (", ".join(sorted(valid)) or "none (this optimizer takes only lr, weight_decay)")
            )


def _resolve(info: OptimizerInfo, given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults, then user values (type-checked; lists become tuples and integers floats where
    the default is one: YAML's `betas: [0, 0.99]`), then pinned."""
    resolved = dict(info.defaults)
    for key, value in given.items():
        default = info.defaults.get(key)
        _check_type(info, key, value, default)
        resolved[key] = _like(value, default)
    resolved.update(info.pinned)
    missing = [k for k in info.hyperparams if k not in resolved]
    if missing:
        raise UserError(f"optimizer {info.name!r} needs keyword {missing[0]!r}; add it to kwargs")
    return resolved


def _check_type(info: OptimizerInfo, key: str, value: Any, default: Any) -> None:
    """A keyword's value must have its default's type: a number where the default is one
    (int or float), a bool, a string, or a list of items of the default tuple's item types
    (its length is the library's to check: Adan takes 2 or 3 betas). Keywords without a
    default, or with a default of another type (None, a dtype), pass."""
    expected = _kind_of(default)
    if expected is None or _fits(value, default):
        return
    example = list(default) if isinstance(default, tuple) else default
    raise UserError(
        f"optimizer {info.name!r} keyword {key!r} expects {expected}, got {value!r} "
        f"({type(value).__name__}); give a value like its default {example!r}"
    )


def _like(value: Any, default: Any) -> Any:
    if isinstance(default, tuple) and isinstance(value, (list, tuple)):
        kinds = {type(item) for item in default}
        return tuple(float(v) if kinds == {float} and type(v) is int else v for v in value)
    return float(value) if type(default) is float and type(value) is int else value


def _kind_of(default: Any) -> str | None:
    """How `_check_type` names the type a default asks for; None when it checks nothing."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, (int, float)):
        return "a number"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, tuple) and all(_kind_of(item) for item in default):
        kinds = sorted({str(_kind_of(item)) for item in default})
        return f"a list of items ({', '.join(kinds)})"
    return None


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, (int, float)):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    kinds = {type(item) for item in default}
    return isinstance(value, (list, tuple)) and all(
        any(_fits(v, kind()) for kind in kinds) for v in value
    )


def _construct(
    info: OptimizerInfo, params: Params, lr: float, weight_decay: float, kwargs: dict[str, Any]
) -> torch.optim.Optimizer:
    grid: dict[str, float] = {"lr": lr}
    if info.accepts_weight_decay:
        grid["weight_decay"] = weight_decay
    elif weight_decay:
        raise UserError(f"optimizer {info.name!r} has no weight_decay; use weight_decay 0")
    try:
        return info.factory(params, **grid, **kwargs)
    except (ValueError, TypeError, IndexError) as err:  # the library's own checks (ranges,
        # and what `_check_type` leaves to it, such as a tuple's length: betas [0.9] for Adam)
        message = " ".join(str(err).split())
        if not isinstance(err, ValueError):
            message = f"{type(err).__name__}: {message}"
        raise UserError(f"optimizer {info.name!r} rejected its settings: {message}") from err
