"""What an optimizer entry can be tuned over: its hyperparameters, defaults and valid ranges.

A search-space axis over an optimizer names one of these. `lr` and `weight_decay` are every
entry's (they are a cell's own fields); the rest come from the entry's keywords and their
defaults: `betas` becomes `beta1` and `beta2` (Adam's family), a SAM-family entry has its own
(`rho`) and its base's. Known keywords carry their mathematical range (momentum and betas in
[0, 1), eps and rho > 0); a keyword of a zoo or user class gets the range its default implies
(> 0 for a positive default, >= 0 for a zero one). Boolean and text keywords are not axes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robustbench_opt.errors import UserError
from robustbench_opt.optim.registry import BASE_KEYWORD, OptimizerInfo, get_info

INF = math.inf


@dataclass(frozen=True)
class Hyperparameter:
    """One tunable value: where it goes (`keyword`, and `index` into a tuple keyword) and what
    it may be (low..high with open or closed ends; integers when `integer`)."""

    name: str  # the axis name: lr, weight_decay, beta1, momentum, rho, ...
    default: float | None  # None: no default (lr is always given)
    low: float
    high: float
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    keyword: str = ""  # the optimizer keyword it sets ("" for lr and weight decay)
    index: int | None = None  # position inside a tuple keyword (betas)

    def range_text(self) -> str:
        """`[0, 1)`, `(0, inf)`; integers say so."""
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        text = f"{left}{self.low:g}, {self.high:g}{right}"
        return f"an integer in {text}" if self.integer else text

    def admits(self, value: float) -> bool:
        """Whether `value` lies in the valid range (and is an integer where it must be)."""
        if self.integer and float(value) != int(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below


LR = Hyperparameter("lr", None, 0.0, INF, low_open=True, high_open=True)
WEIGHT_DECAY = Hyperparameter("weight_decay", 0.0, 0.0, INF, high_open=True)
# Keywords whose range is known from the update rule, whatever the entry.
_KNOWN: Mapping[str, tuple[float, float, bool, bool]] = {
    "momentum": (0.0, 1.0, False, True),
    "beta1": (0.0, 1.0, False, True),
    "beta2": (0.0, 1.0, False, True),
    "dampening": (0.0, 1.0, False, False),
    "eps": (0.0, INF, True, True),
    "rho": (0.0, INF, True, True),
}


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
    if name in _KNOWN:
        low, high, low_open, high_open = _KNOWN[name]
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


def lacking(name: str, axis: str, hyper: Mapping[str, Hyperparameter]) -> UserError:
    """The one-line error for an axis that optimizer `name` does not have."""
    return UserError(
        f"optimizer {name!r} has no hyperparameter {axis!r}; it has: {', '.join(hyper)}; "
        "move the axis to the optimizer entries that have it (optimizers[i].space)"
    )
