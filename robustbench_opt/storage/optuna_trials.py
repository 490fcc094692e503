"""How one cell appears as an Optuna trial: params, distributions, user attributes.

Distributions are fixed per study (Optuna refuses a categorical whose choices change), so they
are derived once from all the study's cells and its search space: optimizer labels and variants
as categoricals, seed as an integer, every axis with its real distribution (so
optuna-dashboard's slice, contour, parallel-coordinate and importance views work); without a
space, lr on a log scale and weight decay linear.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState


@dataclass(frozen=True)
class CellKey:
    """The coordinates of a cell, as Optuna params: optimizer, variant, seed, lr, weight decay
    and, for a study with a search space, its other axes."""

    optimizer: str  # display label
    variant: str
    lr: float
    weight_decay: float
    seed: int
    axes: tuple[tuple[str, Any], ...] = ()  # the other axes' (name, value), in axis order

    def params(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "variant": self.variant,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            **dict(self.axes),
        }


def study_distributions(
    keys: list[CellKey], spec: dict[str, Any] | None = None
) -> dict[str, BaseDistribution]:
    """One distribution per param, covering every cell of a study: optimizer labels and
    variants as categoricals, seed as an integer; lr and weight decay (and every other axis of
    a search space) as their axes declare them (`axis_distribution`), else lr on a log scale
    and weight decay linear over the values the cells take."""
    lrs = [k.lr for k in keys]
    wds = [k.weight_decay for k in keys]
    seeds = [k.seed for k in keys]
    out: dict[str, BaseDistribution] = {
        "optimizer": CategoricalDistribution(sorted({k.optimizer for k in keys})),
        "variant": CategoricalDistribution(sorted({k.variant for k in keys})),
        "lr": FloatDistribution(min(lrs), max(lrs), log=True),
        "weight_decay": FloatDistribution(min(wds), max(wds)),
        "seed": IntDistribution(min(seeds), max(seeds)),
    }
    for name, axes in _space_axes(spec or {}).items():
        out[name] = axis_distribution(axes)
    return out


def axis_distribution(axes: list[dict[str, Any]]) -> BaseDistribution:
    """An axis's distribution over all its declarations in a study (an entry may give its own
    range): log ranges as log-scaled floats (integers for integer settings), linear and
    1 - x log ranges as linear floats, numeric lists as floats (log when positive and
    spanning 100x), choices and text as categoricals."""
    scales = {a["scale"] for a in axes}
    integer = all(a.get("integer") for a in axes)
    ranged = [a for a in axes if a["scale"] not in ("list", "choices")]
    listed = [v for a in axes if a["scale"] in ("list", "choices") for v in a["values"]]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in listed)
    if not ranged and (not numeric or scales == {"choices"}):
        return CategoricalDistribution(list(dict.fromkeys(listed)))
    low = min([a["low"] for a in ranged] + listed)
    high = max([a["high"] for a in ranged] + listed)
    log = (scales == {"log"}) or (not ranged and low > 0 and high >= 100 * low)
    if integer:
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _space_axes(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every declaration of each axis of a stored spec's space, by name."""
    if not spec.get("space"):
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for axis in spec["space"]["axes"]:
        out.setdefault(axis["name"], []).append(axis)
    for entry in spec.get("optimizers", []):
        for axis in entry.get("space") or []:
            out.setdefault(axis["name"], []).append(axis)
    return out


def template(
    key: CellKey,
    distributions: dict[str, BaseDistribution],
    state: TrialState,
    user_attrs: dict[str, Any],
    value: float | None = None,
    intermediate: dict[int, float] | None = None,
) -> FrozenTrial:
    """A trial to hand to `storage.create_new_trial` (with the distributions of its own params:
    an entry's trials carry only its axes)."""
    params = key.params()
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=params,
        distributions={name: distributions[name] for name in params},
        user_attrs=user_attrs,
        intermediate_values=intermediate,
    )
