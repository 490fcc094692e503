"""How one grid cell appears as an Optuna trial: params, distributions, user attributes.

Distributions are fixed per study (Optuna refuses a categorical whose choices change), so they
are derived once from all the study's cells: optimizer labels and variants as categoricals, lr
on a log scale, weight decay linear, seed as an integer.
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
    """The five coordinates of a cell, as Optuna params."""

    optimizer: str  # display label
    variant: str
    lr: float
    weight_decay: float
    seed: int

    def params(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "variant": self.variant,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }


def study_distributions(keys: list[CellKey]) -> dict[str, BaseDistribution]:
    """One distribution per param, covering every cell of a study."""
    lrs = [k.lr for k in keys]
    wds = [k.weight_decay for k in keys]
    seeds = [k.seed for k in keys]
    return {
        "optimizer": CategoricalDistribution(sorted({k.optimizer for k in keys})),
        "variant": CategoricalDistribution(sorted({k.variant for k in keys})),
        "lr": FloatDistribution(min(lrs), max(lrs), log=True),
        "weight_decay": FloatDistribution(min(wds), max(wds)),
        "seed": IntDistribution(min(seeds), max(seeds)),
    }


def template(
    key: CellKey,
    distributions: dict[str, BaseDistribution],
    state: TrialState,
    user_attrs: dict[str, Any],
    value: float | None = None,
    intermediate: dict[int, float] | None = None,
) -> FrozenTrial:
    """A trial to hand to `storage.create_new_trial`."""
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=key.params(),
        distributions=distributions,
        user_attrs=user_attrs,
        intermediate_values=intermediate,
    )
