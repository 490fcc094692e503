"""Where a run's wall time goes, phase by phase (`run --timings`).

One process-wide `TIMINGS`: the command adds each phase's seconds as it passes it, the driver's
Tune callback adds the time it spends writing, and `table` prints them against the wall time
since the process started (read from /proc on Linux, else since this module was imported).
Phases that overlap the trials (recording) are shown inside them, not added to the sum.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

PHASES = (
    "imports",
    "spec and plan",
    "calibration",
    "storage setup",
    "Ray start",
    "first worker ready",
    "trials",
    "recording",
    "scores",
    "shutdown",
)
INSIDE = {"recording": "trials"}  # a phase measured inside another (not added to the sum)
_IMPORTED = time.time()


def process_start() -> float:
    """This process's start (epoch seconds): from /proc on Linux, else this module's import."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED


class Timings:
    """Seconds per phase, added as they pass."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, phase: str, seconds: float) -> None:
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; valid: {', '.join(PHASES)}")
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def table(self, now: float | None = None) -> str:
        """The phases in order with their seconds and share of the wall time so far."""
        wall = (time.time() if now is None else now) - process_start()
        lines = [f"{'phase':<22}{'seconds':>8}{'share':>7}"]
        for name in PHASES:
            if name in self.seconds:
                label = f"  ({name}, in {INSIDE[name]})" if name in INSIDE else name
                seconds = self.seconds[name]
                lines.append(f"{label:<22}{seconds:8.2f}{seconds / wall:7.0%}")
        counted = sum(s for name, s in self.seconds.items() if name not in INSIDE)
        lines.append(f"{'other':<22}{wall - counted:8.2f}{(wall - counted) / wall:7.0%}")
        lines.append(f"{'wall, process start on':<22}{wall:8.2f}")
        return "\n".join(lines)


TIMINGS = Timings()
