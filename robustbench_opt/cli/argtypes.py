"""argparse types shared by the commands: values checked at parse time, one-line errors."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

from robustbench_opt.config import RECIPE_RULES


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


def recipe_value(name: str, kind: type[int] | type[float] | type[str]) -> Callable[[str], Any]:
    """An argparse type for Recipe field `name`: parsed as `kind`, checked by its rule in
    `config.RECIPE_RULES` (argparse names the flag in the error)."""
    noun = {int: "an integer", float: "a number", str: "a value"}[kind]

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}, got {text!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return _checked(name, value)

    return parse


def recipe_list(name: str, kind: type[int] | type[str], example: str) -> Callable[[str], Any]:
    """An argparse type for a tuple Recipe field given as a comma list (`150,225`)."""

    def parse(text: str) -> tuple[Any, ...]:
        try:
            value = tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma list such as {example}, got {text!r}"
            ) from None
        return _checked(name, value)

    return parse


def _checked(name: str, value: Any) -> Any:
    bad = RECIPE_RULES[name].violation(value)
    if bad is not None:
        raise argparse.ArgumentTypeError(bad[1])
    return value
