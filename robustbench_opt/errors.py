"""The one error type users see: a single line naming the bad value, the choices and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input from a user. The CLI prints its message on one line and exits with code 2.

    Library layers name settings, never command-line flags (a notebook has none); `settings`
    lists the settings the fix names (`"data_dir"`), so a front end can add its own flags.
    """

    def __init__(self, message: str, settings: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.settings = settings


def closest(value: str, choices: Iterable[str]) -> str | None:
    """The closest valid choice to a typo, or None."""
    matches = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown(
    what: str,
    value: object,
    choices: Iterable[str],
    fix: str = "",
    settings: tuple[str, ...] = (),
) -> UserError:
    """`unknown optimizer 'adma'; did you mean 'adam'? valid: adam, sgd, ...`"""
    choices = sorted(choices)
    hint = closest(str(value), choices)
    message = f"unknown {what} {value!r}; "
    if hint:
        message += f"did you mean {hint!r}? "
    message += "valid: " + ", ".join(choices)
    if fix:
        message += f"; {fix}"
    return UserError(message, settings)
