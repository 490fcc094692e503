"""Ray processes a killed driver leaves behind, recorded by each run and ended by the next.

A driver that starts its own Ray and is then SIGKILLed leaves Ray's agents (DashboardAgent,
RuntimeEnvAgent: children of the raylet that ignore SIGTERM) running, re-parented to init. So a
run that starts a local Ray records its driver and every Ray process, each as (pid, start time),
in one small JSON file per driver; a normal end deletes it (`forget`). Before the next local Ray
starts, `reap` ends what the records of dead drivers list. A start time (field 22 of
/proc/PID/stat) is part of every entry, so a reused pid is never killed, and the records of live
drivers are never touched: two runs on one machine at once stay safe.

Linux only (it reads /proc); elsewhere `record`, `forget` and `reap` do nothing. No Ray import:
the caller passes the pids Ray started (the driver's new children after `ray.init`, `children`).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
SUPPORTED = sys.platform.startswith("linux") and PROC.is_dir()


def records_dir() -> Path:
    """This user's record directory (per user: nobody else's records can name our processes)."""
    return Path(tempfile.gettempdir()) / f"robustbench-opt-ray-{os.getuid()}"


def _stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (fields[0] is field 3, the state), or
    None when the process is gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """Process `pid`'s start time in clock ticks after boot; None if it is gone or a zombie."""
    fields = _stat(pid)
    # Field 22 of stat (starttime) is fields[19].
    return None if fields is None or fields[0] == "Z" else int(fields[19])


def _children() -> dict[int, list[int]]:
    """Parent pid -> its live children's pids (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (none off Linux)."""
    return sorted(_children().get(pid, [])) if SUPPORTED else []


def descendants(pids: Iterable[int]) -> list[int]:
    """`pids` and every live process below them (walking /proc's parent links)."""
    children = _children()
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


_roots: list[int] = []  # the Ray processes this driver started (`record`), for `refresh`


def record(ray_pids: Iterable[int]) -> None:
    """Records this driver and the Ray processes it started, with all their descendants."""
    if not SUPPORTED:
        return
    _roots[:] = ray_pids
    procs = [[pid, t] for pid in descendants(_roots) if (t := start_time(pid)) is not None]
    driver = os.getpid()
    folder = records_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{driver}.json"
    temp = path.with_suffix(".tmp")  # written whole, then renamed: never read half-written
    temp.write_text(json.dumps({"driver": [driver, start_time(driver)], "processes": procs}))
    os.replace(temp, path)


def refresh() -> None:
    """Records again, with the workers Ray started since (a killed driver's workers can
    outlive it too); nothing when this driver recorded no Ray of its own."""
    if _roots:
        record(list(_roots))


def forget() -> None:
    """Deletes this driver's record (its Ray was shut down)."""
    _roots.clear()
    if SUPPORTED:
        (records_dir() / f"{os.getpid()}.json").unlink(missing_ok=True)


def reap() -> dict[int, list[int]]:
    """SIGKILLs what the records of dead drivers list and deletes those records.

    Returns {dead driver pid: pids it killed} for the drivers that left a process alive. A listed
    process is killed only while its start time is the recorded one.
    """
    folder = records_dir()
    if not SUPPORTED or not folder.is_dir() or folder.stat().st_uid != os.getuid():
        return {}
    ended: dict[int, list[int]] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            driver, driver_start = data["driver"]
            procs = [(int(pid), int(t)) for pid, t in data["processes"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # gone meanwhile (another run reaped it), or not one of ours
        if start_time(driver) == driver_start:
            continue  # its driver runs: hands off
        killed = []
        for pid, started in procs:
            if start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    continue
                killed.append(pid)
        path.unlink(missing_ok=True)
        if killed:
            ended[driver] = sorted(killed)
    return ended


def describe(ended: dict[int, list[int]]) -> str:
    """One line for what `reap` did, e.g. `ended 2 Ray processes (pids 123, 456) left by an
    earlier run whose driver (pid 99) was killed`."""
    pids = [pid for killed in ended.values() for pid in killed]
    many, drivers = len(pids) > 1, ", ".join(map(str, ended))
    listed = f"{len(pids)} Ray process{'es' if many else ''} (pid{'s' if many else ''} "
    listed += ", ".join(map(str, pids)) + ")"
    if len(ended) == 1:
        return f"ended {listed} left by an earlier run whose driver (pid {drivers}) was killed"
    return f"ended {listed} left by earlier runs whose drivers (pids {drivers}) were killed"
