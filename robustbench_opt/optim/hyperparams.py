"""What an optimizer entry can be tuned over: its hyperparameters, defaults and valid ranges.

A search-space axis over an optimizer names one of these. `lr` and `weight_decay` are every
entry's (they are a cell's own fields); the rest come from the entry's keywords and their
defaults: `betas` becomes `beta1` and `beta2` (Adam's family), a SAM-family entry has its own
(`rho`) and its base's. Known keywords carry their mathematical range (momentum and betas in
[0, 1), eps and rho > 0); a keyword of a zoo or user class gets the range its default implies
(> 0 for a positive default, >= 0 for a zero one). Boolean and text keywords are not axes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustbench_opt.optim.registry import BASE_KEYWORD, OptimizerInfo, get_info
from robustbench_opt.tunables import INF, KNOWN, LR, WEIGHT_DECAY, Hyperparameter


def hyperparameters(
    name: str, kwargs: Mapping[str, Any] | None = None
) -> dict[str, Hyperparameter]:
    """The tunable hyperparameters of optimizer `name` with fixed keywords `kwargs` (a SAM
    entry's `base` decides which base keywords it has), by axis name, in a stable order."""
    info = get_info(name)
    out = {"lr": LR}
    if info.accepts_weight_decay:
        out["weight_decay"] = WEIGHT_DECAY
    _add_keywords(out, info)
    if info.two_pass:
        base = get_info(str((kwargs or {}).get(BASE_KEYWORD, info.defaults[BASE_KEYWORD])))
        _add_keywords(out, base)
    return out


def _add_keywords(out: dict[str, Hyperparameter], info: OptimizerInfo) -> None:
    for keyword, default in info.defaults.items():
        if keyword in info.pinned or keyword in out:
            continue
        if keyword == "betas" and isinstance(default, tuple) and len(default) == 2:
            for index, axis in enumerate(("beta1", "beta2")):
                out[axis] = _declare(axis, float(default[index]), "betas", index)
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            out[keyword] = _declare(keyword, default, keyword, None)


def _declare(name: str, default: float, keyword: str, index: int | None) -> Hyperparameter:
    integer = isinstance(default, int) and not isinstance(default, bool)
    if name in KNOWN:
        low, high, low_open, high_open = KNOWN[name]
    elif default > 0:
        low, high, low_open, high_open = 0.0, INF, not integer, True
    elif default == 0:
        low, high, low_open, high_open = 0.0, INF, False, True
    else:
        low, high, low_open, high_open = -INF, INF, True, True
    return Hyperparameter(name, default, low, high, low_open, high_open, integer, keyword, index)


def apply_values(
    hyper: Mapping[str, Hyperparameter],
    kwargs: Mapping[str, Any],
    values: Mapping[str, float],
    defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """`kwargs` with the optimizer-keyword axes of `values` set (lr and weight decay are the
    cell's own fields and are left to the caller); a tuple keyword keeps its other items from
    `kwargs`, else from the entry's `defaults`."""
    out = dict(kwargs)
    for axis, value in values.items():
        spec = hyper[axis]
        if not spec.keyword:
            continue
        if spec.index is None:
            out[spec.keyword] = int(value) if spec.integer else float(value)
            continue
        items = list(out.get(spec.keyword, defaults[spec.keyword]))
        items[spec.index] = float(value)
        out[spec.keyword] = tuple(items)
    return out


def entry_defaults(name: str, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keyword defaults a cell of optimizer `name` starts from (a SAM entry's and its
    base's), for `apply_values`."""
    info = get_info(name)
    defaults = dict(info.defaults)
    if info.two_pass:
        base = get_info(str((kwargs or {}).get(BASE_KEYWORD, info.defaults[BASE_KEYWORD])))
        defaults = {**base.defaults, **defaults}
    return defaults


def lacking(name: str, axis: str, hyper: Mapping[str, Hyperparameter]) -> str:
    """What to say of an axis that optimizer `name` does not have."""
    return (
        f"optimizer {name!r} has no hyperparameter {axis!r}; it has: {', '.join(hyper)}; set "
        "one of those, or choose an optimizer that has it"
    )
