"""One explicit registry of optimizers, timm-style: a frozen `OptimizerInfo` per entry.

Names resolve in this order: our registry (names and aliases), a user's class given as
`package.module:Class`, then pytorch-optimizer's zoo by its lowercase name. Our names win on
conflicts; the library's version of a shadowed name stays reachable as `pytorch_optimizer:Class`.

Momentum convention (the paper, seed 003 in the README, asks to say which): `momentum` and
`nag` use the frameworks' form, torch.optim.SGD with dampening 0:

    d <- mu d + g              (d_0 = 0)
    theta <- theta - lr d                       (momentum, heavy ball)
    theta <- theta - lr (g + mu d)              (nag, Sutskever's reformulation of eq. 5)

not the paper's eq. 3-4 form d <- mu d + (1 - mu) lr g. For a constant lr the two differ only
by a rescaling of the learning rate, lr_framework = (1 - mu) lr_paper (0.1 x at mu = 0.9), so
the paper's grids carry over once that factor is accounted for.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any, Literal

import pytorch_optimizer
import torch

from robustbench_opt.errors import UserError, closest
from robustbench_opt.optim.stacked import ADAM, SGD, StackedRule

# How an entry applies weight decay lambda:
#   l2: lambda * theta is added to the gradient (it enters the adaptive moments);
#   decoupled: theta *= 1 - lr * lambda, outside the adaptive step (AdamW);
#   decoupled_fixed: theta *= 1 - lambda, not scaled by lr;
#   upstream: whatever the library class does with its own flags (zoo and user classes);
#   base: SAM family, as its base optimizer does (a built SAM reports the base's mode).
WeightDecayMode = Literal["l2", "decoupled", "decoupled_fixed", "upstream", "base"]
GRID_KEYWORDS: tuple[str, ...] = ("lr", "weight_decay")  # set by the study grid, never by kwargs
BASE_KEYWORD = "base"  # two-pass entries: registry name of the base optimizer

_EMPTY: Mapping[str, Any] = MappingProxyType({})
ZOO: frozenset[str] = frozenset(pytorch_optimizer.get_supported_optimizers())


@dataclass(frozen=True)
class OptimizerInfo:
    """One optimizer: how to build it and what it accepts.

    `factory(params, lr=..., weight_decay=..., **resolved)` builds it, where `resolved` is
    `defaults`, overridden by user keywords from `hyperparams`, then `pinned`. Two-pass entries
    (SAM family) wrap a base optimizer named by the `base` keyword; the base's own keywords are
    accepted flat beside `base` and `rho`.
    """

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    hyperparams: tuple[str, ...]  # accepted keywords besides lr / weight_decay
    defaults: Mapping[str, Any]
    weight_decay_mode: WeightDecayMode
    two_pass: bool  # needs a second forward-backward per step (SAM family)
    reference: str  # paper + upstream implementation, and any deviation from the paper
    aliases: tuple[str, ...] = ()
    # library flags we fix; users may not override them
    pinned: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    accepts_weight_decay: bool = True  # False: the class has no weight_decay (then it must be 0)
    # its update over K cells' stacked parameters at once (packs), or None: one step per cell
    stacked: StackedRule | None = None


def _frozen(data: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(data))


def _entry(
    name: str,
    factory: Callable[..., torch.optim.Optimizer],
    *,
    defaults: Mapping[str, Any],
    weight_decay_mode: WeightDecayMode,
    reference: str,
    pinned: Mapping[str, Any] = _EMPTY,
    two_pass: bool = False,
    aliases: tuple[str, ...] = (),
    stacked: StackedRule | None = None,
) -> OptimizerInfo:
    """A registry entry whose accepted keywords are exactly its defaults' keys."""
    return OptimizerInfo(
        name=name,
        factory=factory,
        hyperparams=tuple(defaults),
        defaults=_frozen(defaults),
        weight_decay_mode=weight_decay_mode,
        two_pass=two_pass,
        reference=reference,
        aliases=aliases,
        pinned=_frozen(pinned),
        stacked=stacked,
    )


_ADAM_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-8}
_BELIEF_DEFAULTS = {"betas": (0.9, 0.999), "eps": 1e-16}  # AdaBelief's own default eps

_ENTRIES: tuple[OptimizerInfo, ...] = (
    _entry(
        "sgd",
        torch.optim.SGD,
        defaults={},
        pinned={"momentum": 0.0, "dampening": 0.0, "nesterov": False},
        stacked=SGD,
        weight_decay_mode="l2",
        reference="plain SGD, theta <- theta - lr g (eq. 2); torch.optim.SGD with momentum 0",
    ),
    _entry(
        "momentum",
        torch.optim.SGD,
        defaults={"momentum": 0.9},
        pinned={"dampening": 0.0, "nesterov": False},
        stacked=SGD,
        weight_decay_mode="l2",
        reference=(
            "heavy ball (Polyak 1964; eq. 3-4); torch.optim.SGD, framework convention "
            "d <- mu d + g, theta <- theta - lr d (see module docstring)"
        ),
    ),
    _entry(
        "nag",
        torch.optim.SGD,
        defaults={"momentum": 0.9},
        pinned={"dampening": 0.0, "nesterov": True},
        stacked=SGD,
        weight_decay_mode="l2",
        reference=(
            "Nesterov accelerated gradient (Nesterov 1983; Sutskever et al. 2013; eq. 5); "
            "torch.optim.SGD(nesterov=True): theta <- theta - lr (g + mu d)"
        ),
    ),
    _entry(
        "adam",
        torch.optim.Adam,
        defaults=_ADAM_DEFAULTS,
        stacked=ADAM,
        weight_decay_mode="l2",
        reference=(
            "Adam (Kingma & Ba, arXiv 1412.6980; eq. 6-10), weight decay as L2 in the gradient "
            "(eq. 18); torch.optim.Adam: eps outside the root, m_hat / (sqrt(v_hat) + eps)"
        ),
    ),
    _entry(
        "adamw",
        torch.optim.AdamW,
        defaults=_ADAM_DEFAULTS,
        stacked=ADAM,
        weight_decay_mode="decoupled",
        reference=(
            "AdamW (Loshchilov & Hutter, arXiv 1711.05101); torch.optim.AdamW: "
            "theta *= 1 - lr wd, then the Adam step"
        ),
    ),
    _entry(
        "radam",
        torch.optim.RAdam,
        defaults=_ADAM_DEFAULTS,
        pinned={"decoupled_weight_decay": True},
        weight_decay_mode="decoupled",
        reference=(
            "RAdam (Liu et al., arXiv 1908.03265; eq. 11-15) with decoupled decay; "
            "torch.optim.RAdam: rectified step when rho_t > 5 (the paper allows 4 or 5), "
            "adaptive term m_hat / (sqrt(v_hat) + eps / sqrt(1 - b2^t))"
        ),
    ),
    _entry(
        "adabelief",
        pytorch_optimizer.AdaBelief,
        defaults=_BELIEF_DEFAULTS,
        pinned={
            "weight_decouple": True,
            "fixed_decay": False,
            "rectify": False,
            "ams_bound": False,
        },
        weight_decay_mode="decoupled",
        reference=(
            "AdaBelief (Zhuang et al., arXiv 2010.07468; eq. 16) with decoupled decay; "
            "pytorch_optimizer.AdaBelief: s <- b2 s + (1-b2)(g-m)^2 + eps, "
            "step m_hat / (sqrt(s_hat) + eps)"
        ),
    ),
    _entry(
        "adabound",
        pytorch_optimizer.AdaBound,
        defaults={**_ADAM_DEFAULTS, "final_lr": 0.1, "gamma": 1e-3},
        pinned={"weight_decouple": False, "fixed_decay": False, "ams_bound": False},
        weight_decay_mode="l2",
        reference=(
            "AdaBound (Luo et al., arXiv 1902.09843; upstream Luolc/AdaBound, L2 decay); "
            "pytorch_optimizer.AdaBound: step clip(lr sqrt(1-b2^t)/(1-b1^t) / "
            "(sqrt(v + 1e-15) + eps), final_lr (1 - 1/(gamma t + 1)), "
            "final_lr (1 + 1/(gamma t))) * m, final_lr scaled with lr by schedules"
        ),
    ),
    _entry(
        "adamw_radam_adabelief",
        pytorch_optimizer.AdaBelief,
        defaults=_BELIEF_DEFAULTS,
        pinned={
            "weight_decouple": True,
            "fixed_decay": False,
            "rectify": True,
            "degenerated_to_sgd": True,
            "n_sma_threshold": 4,
            "ams_bound": False,
        },
        weight_decay_mode="decoupled",
        aliases=("proposed",),
        reference=(
            "the paper's proposed optimizer, AdamW + RAdam + AdaBelief (eq. 19-20): "
            "pytorch_optimizer.AdaBelief(rectify=True, degenerated_to_sgd=True, "
            "n_sma_threshold=4, decoupled lr-scaled decay). Differences from the paper's text: "
            "eps sits outside the root, r_t m_hat / (sqrt(s_hat) + eps / sqrt(1 - b2^t)) instead "
            "of r_t m_hat / sqrt(s_hat + eps) (s already carries AdaBelief's + eps per step, "
            "eq. 16), and the rectified branch runs when rho_t >= 4 rather than > 4 (they differ "
            "only at rho_t == 4 exactly, where r_t = 0)"
        ),
    ),
    _entry(
        "sam",
        pytorch_optimizer.SAM,
        defaults={BASE_KEYWORD: "momentum", "rho": 0.05},
        pinned={"adaptive": False},
        weight_decay_mode="base",
        two_pass=True,
        reference=(
            "SAM (Foret et al., arXiv 2010.01412) over any base: e = rho g / ||g||, gradient at "
            "w + e, restore w, base step; pytorch_optimizer.SAM (computes ||g|| in float32)"
        ),
    ),
    _entry(
        "asam",
        pytorch_optimizer.SAM,
        defaults={BASE_KEYWORD: "momentum", "rho": 0.5},
        pinned={"adaptive": True},
        weight_decay_mode="base",
        two_pass=True,
        reference=(
            "ASAM (Kwon et al., arXiv 2102.11600; rho 0.5 as its CIFAR default) over any base: "
            "e = rho w^2 g / || |w| g ||; pytorch_optimizer.SAM(adaptive=True), i.e. "
            "T_w = |w| (the paper's eta offset is 0, as in davda54/sam)"
        ),
    ),
)

REGISTRY: Mapping[str, OptimizerInfo] = MappingProxyType({e.name: e for e in _ENTRIES})
_ALIASES: Mapping[str, str] = MappingProxyType(
    {alias: e.name for e in _ENTRIES for alias in e.aliases}
)


def get_info(name: str) -> OptimizerInfo:
    """The entry for `name`: a registry name or alias, `package.module:Class`, or a zoo name."""
    if not isinstance(name, str):
        raise _unknown_optimizer(name)
    if name in REGISTRY:
        return REGISTRY[name]
    if name in _ALIASES:
        return REGISTRY[_ALIASES[name]]
    if ":" in name:
        return _import_info(name)
    if name in ZOO:
        return _zoo_info(name)
    raise _unknown_optimizer(name)


def list_optimizers() -> list[OptimizerInfo]:
    """Every optimizer that can run a trial: our registry first, then pytorch-optimizer's zoo
    (names we shadow, and classes that take a model or need a closure, left out)."""
    shadowed = set(REGISTRY) | set(_ALIASES)
    zoo = [_zoo_info(n) for n in sorted(ZOO - shadowed) if _runs_on_a_grid(_zoo_class(n))]
    return list(_ENTRIES) + zoo


def _unknown_optimizer(name: object) -> UserError:
    names = list(REGISTRY) + list(_ALIASES)
    hint = closest(str(name), names) or closest(str(name), sorted(ZOO))
    parts = [f"unknown optimizer {name!r}"]
    if hint:
        parts.append(f"did you mean {hint!r}?")
    parts.append("valid: " + ", ".join(sorted(names)))
    parts.append(
        f"or any of pytorch-optimizer's {len(ZOO)} names (pytorch_optimizer."
        "get_supported_optimizers()), or a class as 'package.module:Class'"
    )
    return UserError("; ".join(parts))


@cache
def _zoo_info(name: str) -> OptimizerInfo:
    cls = _zoo_class(name)
    return _class_info(name, cls, f"pytorch_optimizer.{cls.__name__}, own defaults")


def _zoo_class(name: str) -> type[torch.optim.Optimizer]:
    return pytorch_optimizer.load_optimizer(name)


def _runs_on_a_grid(cls: type[torch.optim.Optimizer]) -> bool:
    """Takes parameters first (not a model), an lr, and steps without a closure."""
    first = next(iter(inspect.signature(cls).parameters))
    return first == "params" and "lr" in signature_keywords(cls) and not _needs_closure(cls)


def _needs_closure(cls: type[torch.optim.Optimizer]) -> bool:
    """`step(closure)` without a default: it re-evaluates the loss itself (L-BFGS)."""
    closure = inspect.signature(cls.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def _import_info(path: str) -> OptimizerInfo:
    """Entry for a user's optimizer class given as `package.module:Class`."""
    fix = "give an optimizer class as 'package.module:Class', e.g. 'torch.optim:Adagrad'"
    module_name, _, attr = path.partition(":")
    if not module_name or not attr or ":" in attr:
        raise UserError(f"bad optimizer import path {path!r}; {fix}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(
            f"cannot import module {module_name!r} of optimizer {path!r} ({err}); {fix}"
        ) from err
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        problem = (
            f"module {module_name!r} has no attribute {attr!r}"
            if cls is None
            else f"{path!r} is not a torch.optim.Optimizer subclass"
        )
        raise UserError(f"bad optimizer {path!r}: {problem}; {fix}")
    return _class_info(path, cls, f"user class {path}, its own defaults")


def _class_info(name: str, cls: type[torch.optim.Optimizer], reference: str) -> OptimizerInfo:
    """Entry for a library or user class; keywords come from its signature (never **kwargs)."""
    named = signature_keywords(cls)
    if "lr" not in named:
        raise UserError(f"optimizer {name!r} takes no 'lr' keyword; it cannot run on an lr grid")
    if _needs_closure(cls):
        raise UserError(
            f"optimizer {name!r} needs a closure that re-evaluates the loss at every step (as "
            "L-BFGS does); trials step once per batch without one; choose another optimizer"
        )
    hyper = tuple(n for n in named if n not in GRID_KEYWORDS)
    defaults = {
        n: named[n].default for n in hyper if named[n].default is not inspect.Parameter.empty
    }
    return OptimizerInfo(
        name=name,
        factory=cls,
        hyperparams=hyper,
        defaults=_frozen(defaults),
        weight_decay_mode="upstream",
        two_pass=False,
        reference=reference,
        accepts_weight_decay="weight_decay" in named,
    )


def signature_keywords(cls: type[torch.optim.Optimizer]) -> dict[str, inspect.Parameter]:
    """Named keywords of an optimizer class, without the first (params) and *args / **kwargs."""
    params = list(inspect.signature(cls).parameters.values())[1:]
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return {p.name: p for p in params if p.kind not in variadic}
