"""argparse types shared by the commands: values checked at parse time, one-line errors."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any


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
