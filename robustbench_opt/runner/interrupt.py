"""Ctrl-C or SIGTERM during a run: stop at once, but never in the middle of a database write.

Tune's own SIGINT handling stops gracefully, waiting up to 15 s for its actors, and Ray's
SIGTERM handling aborts the driver partway through whatever it does (under Slurm, `scancel`
sends SIGTERM: the driver then gave back only some of its claimed cells). A run instead
installs `CTRL_C` for both signals while Tune runs, so either raises KeyboardInterrupt at once
and the run abandons Tune, releases its cells and shuts Ray down in seconds. Driver callbacks
that write are wrapped in `atomic`: an interrupt that arrives inside one is raised when it
returns.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}  # handled, as the user reads it


class CtrlC:
    """The run's SIGINT/SIGTERM handler: a KeyboardInterrupt at once, deferred inside
    `deferred()`; `caught` names the last signal that stopped a run ("Ctrl-C", "SIGTERM")."""

    def __init__(self) -> None:
        self.depth, self.pending = 0, False
        self.caught: str | None = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.caught = SIGNALS[signal.Signals(signum)]
        if self.depth:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """The handler, while the block runs (main thread only; elsewhere Python's default)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self._handler) for signum in SIGNALS}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.pending = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """A block that Ctrl-C does not cut: an interrupt inside it is raised at its end."""
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if self.pending and not self.depth:
                self.pending = False
                raise KeyboardInterrupt


CTRL_C = CtrlC()
Method = TypeVar("Method", bound=Callable[..., Any])


def atomic(method: Method) -> Method:
    """A driver callback that Ctrl-C does not cut in half (see `CtrlC`)."""

    @functools.wraps(method)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with CTRL_C.deferred():
            return method(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
