"""Declared settings: each setting is declared once, and its checks are derived from that.

A dataclass field declared with `setting` carries its default, a help line and its valid values
(numeric bounds with open or closed ends, or the choices of a `Literal` type); `rules_of` reads
the class into one `Rule` per field, its kind taken from the field's type. The study-file
checks (`spec`), the trainer's check (`config.check_recipe`) and the command-line flags
(`cli.argtypes.add_rule_flags`) are all made from these rules, so each fact has one home.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from robustbench_opt.errors import unknown

Kind = Literal["int", "float", "bool", "choice", "tuple"]
_RULE = "rule"  # the dataclass field metadata key `setting` writes


@dataclass(frozen=True)
class Rule:
    """One setting: its kind, default, valid values and help line.

    Numbers lie between `low` and `high`, each end open or closed (an infinite end is open:
    no bound), as `optim.hyperparams.Hyperparameter` has them; a tuple's bounds or choices
    apply to each item. An optional setting (`none` given) also takes None, and `none` says
    what None means ("never", "auto").
    """

    name: str
    kind: Kind
    default: Any
    help: str
    item: Literal["int", "choice"] | None = None  # kind "tuple": what each item is
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = True  # True: values > low; False: values >= low
    high_open: bool = True  # True: values < high; False: values <= high
    choices: tuple[str, ...] = ()  # kind "choice", or items of kind "choice"
    noun: str = ""  # in messages: "an epoch", "a probability"; for choices, what one is
    none: str | None = None  # an optional setting: what None means

    @property
    def optional(self) -> bool:
        """Whether None is a valid value."""
        return self.none is not None

    @property
    def expected(self) -> str:
        """What a valid value (or item) is: "an integer >= 1", "a number in (0, 1)"."""
        low, high = math.isfinite(self.low), math.isfinite(self.high)
        if low and high:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{self.noun} in {left}{self.low:g}, {self.high:g}{right}"
        if low:
            return f"{self.noun} {'>' if self.low_open else '>='} {self.low:g}"
        if high:
            return f"{self.noun} {'<' if self.high_open else '<='} {self.high:g}"
        return self.noun

    def within(self, item: Any) -> bool:
        """Whether a number (or a tuple's item) lies within the bounds."""
        above = item > self.low if self.low_open else item >= self.low
        below = item < self.high if self.high_open else item <= self.high
        return above and below

    def violation(self, value: Any) -> tuple[int | None, str] | None:
        """(index of the bad item or None, what is wrong) for a bad value of the right type,
        else None (None itself always passes: it is checked by the type)."""
        if value is None:
            return None
        items = list(enumerate(value)) if self.kind == "tuple" else [(None, value)]
        for index, item in items:
            if self.choices and item not in self.choices:
                return index, str(unknown(self.noun, item, self.choices))
            if not self.choices and not self.within(item):
                return index, f"must be {self.expected}, got {item!r}"
        return None


def setting(
    default: Any,
    help: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    noun: str = "",
    none: str | None = None,
) -> Any:
    """A dataclass field declaring a setting: its default, help line, bounds (gt/ge, lt/le),
    the noun messages use and, for an optional setting, what None means."""
    if (gt is not None and ge is not None) or (lt is not None and le is not None):
        raise TypeError("give one lower bound (gt or ge) and one upper bound (lt or le)")
    low = gt if gt is not None else ge
    high = lt if lt is not None else le
    declared = {
        "help": help,
        "low": -math.inf if low is None else float(low),
        "high": math.inf if high is None else float(high),
        "low_open": ge is None,
        "high_open": le is None,
        "noun": noun,
        "none": none,
    }
    return dataclasses.field(default=default, metadata={_RULE: MappingProxyType(declared)})


def rules_of(cls: type) -> Mapping[str, Rule]:
    """The rule of every field of dataclass `cls`, in field order; each field must be declared
    with `setting`, and its type must be one of the kinds (optional: `| None`)."""
    hints = typing.get_type_hints(cls)
    rules = {}
    for f in dataclasses.fields(cls):
        if _RULE not in f.metadata:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with rules.setting")
        rules[f.name] = _rule(f.name, hints[f.name], f.default, dict(f.metadata[_RULE]))
    return MappingProxyType(rules)


_NOUNS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _rule(name: str, hint: Any, default: Any, declared: dict[str, Any]) -> Rule:
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        (hint,) = [a for a in args if a is not type(None)]
        optional = type(None) in args
    if optional != (declared["none"] is not None):
        raise TypeError(f"{name}: an optional type needs none= (what None means), and only it")
    kind, item, choices = _kind(name, hint)
    if choices and not declared["noun"]:
        raise TypeError(f"{name}: a setting with choices needs noun= (what one choice is)")
    noun = declared.pop("noun") or _NOUNS[item or kind]
    return Rule(name, kind, default, item=item, choices=choices, noun=noun, **declared)


def _kind(name: str, hint: Any) -> tuple[Kind, Literal["int", "choice"] | None, tuple[str, ...]]:
    """(kind, item kind of a tuple, choices) of a field's type."""
    if hint in (int, float, bool):
        return hint.__name__, None, ()
    if typing.get_origin(hint) is Literal:
        return "choice", None, typing.get_args(hint)
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis:
        if args[0] is int:
            return "tuple", "int", ()
        if typing.get_origin(args[0]) is Literal:
            return "tuple", "choice", typing.get_args(args[0])
    raise TypeError(f"{name}: type {hint} is none of int, float, bool, Literal, tuple[...]")
