"""Processes forked from the driver: they start at once with everything it imported (torch, the
trial engine) and die with it.

GNU OpenMP, torch's CPU thread pool, hangs in a forked child that asks for more than one thread
once its parent has run a parallel region (measured: a 2-thread convolution in the parent, then
one in the child, never returned). So the driver computes on one torch thread (`one_thread`,
which `run` enters first) and leaves every multi-thread computation to forked children, which
set their own thread count.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

FORK = multiprocessing.get_context("fork")
PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent thread ends


def one_thread() -> None:
    """The driver computes on one torch thread, so that its forked children may use several."""
    import torch

    torch.set_num_threads(1)


def die_with_parent() -> None:
    """In a forked child: end when the driver ends, even by kill -9 (Linux; elsewhere the child
    ends at its next message to the driver, whose pipe is then closed). Ctrl-C, which a
    terminal sends to the whole process group, is the driver's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the driver ended before prctl took effect
            os._exit(1)


def call(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a forked child (its own torch threads); its return value, or a
    RuntimeError naming what it raised."""
    receive, send = FORK.Pipe(duplex=False)
    child = FORK.Process(target=_call_and_send, args=(send, fn, args), daemon=True)
    child.start()
    send.close()
    try:
        ok, value = receive.recv()
    except EOFError:  # it died before it answered
        ok, value = False, None
    child.join()
    if not ok:
        why = value or f"it ended with exit code {child.exitcode} before it answered"
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} in a forked process: {why}")
    return value


def _call_and_send(send: Connection, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    die_with_parent()
    try:
        result = (True, fn(*args))
    except Exception as err:  # reported to the parent, which raises it there
        result = (False, f"{type(err).__name__}: {err}")
    send.send(result)
