"""argparse types shared by the commands: values checked at parse time, one-line errors."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping
from typing import Any

from robustbench_opt.errors import unknown
from robustbench_opt.rules import Rule


def number(
    kind: type[int] | type[float],
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Callable[[str], Any]:
    """An argparse type: a finite int or float within the given bounds."""
    bounds = [(">", gt), (">=", ge), ("<", lt), ("<=", le)]
    rule = " and ".join(f"{op} {v:g}" for op, v in bounds if v is not None)
    checks = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__, "<=": float.__le__}
    noun = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun} {rule}, got {text!r}") from None
        ok = math.isfinite(value) and all(
            checks[op](float(value), float(v)) for op, v in bounds if v is not None
        )
        if not ok:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text!r}")
        return value

    return parse


positive_int = number(int, ge=1)


def add_rule_flags(parser: argparse.ArgumentParser, rules: Mapping[str, Rule]) -> None:
    """One flag per rule, under its study-file name (`cutmix_prob`: `--cutmix-prob`), parsed and
    checked by the rule (argparse names the flag in the error); help shows each default."""
    for rule in rules.values():
        flag = "--" + rule.name.replace("_", "-")
        help = rule.help.replace("%", "%%")
        if rule.kind == "bool" and not rule.optional:
            if rule.default is not False:
                raise TypeError(f"{rule.name}: a flag turns a setting on; declare it off")
            parser.add_argument(flag, action="store_true", help=f"{help} (default: off)")
            continue
        listed = f"comma list of {','.join(rule.choices)}" if rule.choices else "comma list"
        form = f"{listed}; " if rule.kind == "tuple" else ""
        parser.add_argument(
            flag,
            type=rule_type(rule),
            default=rule.default,
            metavar=_metavar(rule),
            help=f"{help} ({form}default: {_default_text(rule)})",
        )


_AUTO_ON_OFF = {"auto": None, "on": True, "off": False}


def rule_type(rule: Rule) -> Callable[[str], Any]:
    """An argparse type: the text parsed as the rule's kind, then checked by the rule."""

    def parse(text: str) -> Any:
        value = _parse(rule, text)
        bad = rule.violation(value)
        if bad is not None:
            raise argparse.ArgumentTypeError(bad[1])
        return value

    return parse


def _parse(rule: Rule, text: str) -> Any:
    if rule.kind == "bool":  # an optional bool: auto, on or off
        if text not in _AUTO_ON_OFF:
            raise argparse.ArgumentTypeError(str(unknown("value", text, _AUTO_ON_OFF)))
        return _AUTO_ON_OFF[text]
    if rule.kind == "tuple":
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if rule.item == "int":
            try:
                return tuple(int(part) for part in parts)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected a comma list of integers such as 2,5, got {text!r}"
                ) from None
        return tuple(parts)
    if rule.kind == "choice":
        return text
    noun = {"int": "an integer", "float": "a number"}[rule.kind]
    try:
        value = int(text) if rule.kind == "int" else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _metavar(rule: Rule) -> str:
    if rule.kind == "bool":
        return "{" + ",".join(_AUTO_ON_OFF) + "}"
    if rule.kind == "choice":
        return "{" + ",".join(rule.choices) + "}"
    return rule.name.upper()


def _default_text(rule: Rule) -> str:
    """The default as help shows it; "%(default)s" lets a command's set_defaults show."""
    if rule.default is None:
        assert rule.none is not None
        return rule.none
    if rule.kind == "tuple":
        return ",".join(map(str, rule.default)) or "none"
    return "%(default)s"
