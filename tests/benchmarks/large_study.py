"""Studies of 10^3, 10^4 and 10^5 cells of a tiny trial: how `run` starts, runs and stops.

    .venv/bin/python tests/benchmarks/large_study.py [--sizes 1000 10000 100000] [--seconds 60]

For each size, a study of 4 optimizers x lr x weight decay (x seeds) on digits with simple_cnn
for 1 epoch is written to a temporary folder, then:

- `run --dry-run`: wall time and peak memory (the process's max resident set);
- `run` into a fresh SQLite file, as a subprocess in its own session: the time to the first
  claimed cell (Ray up, study registered, first trial handed to Tune) and to the first finished
  cell, then cells per minute over `--seconds` seconds after the first finished cell, and the
  driver's resident memory sampled every second;
- Ctrl-C (SIGINT to the run's process group, as a terminal sends it): the time until `run`
  exits, its closing lines, and the database afterwards (no cell left running).

Times are of this machine, loaded or not; run it on a quiet one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
OPTIMIZERS = ["sgd", "adam", "adamw", "proposed"]
GRIDS = {1_000: (25, 10, 1), 10_000: (50, 50, 1), 100_000: (50, 50, 10)}  # lrs, wds, seeds


def write_study(folder: Path, cells: int) -> Path:
    lrs, wds, seeds = GRIDS[cells]
    study = {
        "name": f"cells{cells}",
        "dataset": "digits",
        "model": "simple_cnn",
        "recipe": {"epochs": 1, "batch_size": 64, "schedule": "cosine"},
        "optimizers": OPTIMIZERS,
        "lrs": [float(x) for x in np.geomspace(1e-4, 1.0, lrs)],
        "weight_decays": [0.0, *(float(x) for x in np.geomspace(1e-5, 1e-1, wds - 1))],
        "seeds": list(range(seeds)),
        "resources": {"cpus": 1, "gpus": 0},
    }
    path = folder / f"cells{cells}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def command(study: Path, url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "robustbench_opt", "run", str(study), "--storage", url, *extra]


def dry_run(study: Path, url: str) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of `run --dry-run`."""
    start = time.perf_counter()
    proc = subprocess.Popen(command(study, url, "--dry-run"), cwd=ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return time.perf_counter() - start, usage.ru_maxrss / 1024


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def states(path: Path, study: str) -> dict[str, int]:
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(
                "SELECT state, COUNT(*) FROM rbo_cell WHERE study = ? GROUP BY state", (study,)
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or busy
        return {}
    return dict(rows)


def session_pids(sid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                found.append(int(entry.name))
    return found


def timed_run(study: Path, db: Path, name: str, seconds: float) -> dict:
    """Runs `run` until `seconds` after its first finished cell, then Ctrl-C; what happened."""
    log = db.with_suffix(".log")
    with log.open("w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            command(study, f"sqlite:///{db}"),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        first_claim = first_done = None
        memory: list[tuple[float, float]] = []
        done_at_first = 0
        while proc.poll() is None:
            now = time.perf_counter() - start
            mib = rss_mib(proc.pid)
            if mib is not None:
                memory.append((now, mib))
            counts = states(db, name)
            if first_claim is None and counts.get("running", 0) + counts.get("done", 0):
                first_claim = now
            finished = counts.get("done", 0) + counts.get("diverged", 0)
            if first_done is None and finished:
                first_done, done_at_first = now, finished
            if first_done is not None and now - first_done >= seconds:
                break
            time.sleep(1.0)
        finished = sum(states(db, name).get(s, 0) for s in ("done", "diverged"))
        stop = time.perf_counter()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        exit_seconds = time.perf_counter() - stop
    leftovers = [p for p in session_pids(proc.pid) if p != proc.pid]
    for pid in leftovers:  # hygiene: end what a stopped run left, before the next size
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    after = states(db, name)
    lines = [x for x in log.read_text().splitlines() if x.startswith(("trained", "stopped"))]
    rate = (finished - done_at_first) / ((stop - start - first_done) / 60) if first_done else 0.0
    at_first = next((m for t, m in memory if t >= (first_done or 0)), float("nan"))
    return {
        "first_claim": first_claim,
        "first_done": first_done,
        "per_minute": rate,
        "rss_at_first": at_first,
        "rss_end": memory[-1][1] if memory else float("nan"),
        "rss_max": max((m for _, m in memory), default=float("nan")),
        "exit_seconds": exit_seconds,
        "exit_code": proc.returncode,
        "finished": finished,
        "running_after": after.get("running", 0),
        "closing": lines,
        "leftovers": len(leftovers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(GRIDS), choices=GRIDS)
    parser.add_argument("--seconds", type=float, default=60.0, help="run after the first cell")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for cells in args.sizes:
            study = write_study(folder, cells)
            db = folder / f"cells{cells}.db"
            dry_seconds, dry_mib = dry_run(study, f"sqlite:///{db}")
            result = timed_run(study, db, f"cells{cells}", args.seconds)
            rows.append((cells, dry_seconds, dry_mib, result))
            print(
                f"{cells} cells: dry-run {dry_seconds:.1f} s, {dry_mib:.0f} MiB; first claim "
                f"{result['first_claim']:.1f} s, first finished cell {result['first_done']:.1f} s; "
                f"{result['per_minute']:.0f} cells/min; driver RSS {result['rss_at_first']:.0f} "
                f"MiB at the first cell, {result['rss_end']:.0f} MiB at Ctrl-C (max "
                f"{result['rss_max']:.0f}); Ctrl-C to exit {result['exit_seconds']:.1f} s "
                f"(exit {result['exit_code']}); {result['finished']} cells finished, "
                f"{result['running_after']} left running; leftover processes "
                f"{result['leftovers']}",
                flush=True,
            )
            for line in result["closing"]:
                print(f"    {line}", flush=True)


if __name__ == "__main__":
    main()
