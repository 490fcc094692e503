"""Overhead of `robustbench-opt run`: wall time vs summed trial time, and peak memory.

    .venv/bin/python tests/benchmarks/overhead.py [STUDY.yaml] [--max-concurrent N] [--executor E]

Runs the study (default studies/quickstart.yaml) into a fresh SQLite file as a subprocess in its
own session, samples the summed RSS of every process in that session (driver, Ray daemons,
workers) from /proc every 0.25 s, and prints wall time, summed trial wall time (from the
database), their ratio with and without the Ray start-up, and peak memory. Linux only.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = os.sysconf("SC_PAGE_SIZE")


def session_rss(sid: int) -> int:
    """Summed resident memory (bytes) of the processes in session `sid`."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid:
                total += int((entry / "statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default=str(ROOT / "studies" / "quickstart.yaml"))
    parser.add_argument("--max-concurrent", type=int)
    parser.add_argument("--executor", choices=("auto", "local", "ray"), help="run --executor")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from robustbench_opt.spec import load_study
    from robustbench_opt.storage import Store

    name = load_study(args.study).name
    with tempfile.TemporaryDirectory(prefix="rbo-bench-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        cmd = [sys.executable, "-m", "robustbench_opt", "run", args.study, "--storage", url]
        if args.max_concurrent:
            cmd += ["--max-concurrent", str(args.max_concurrent)]
        if args.executor:
            cmd += ["--executor", args.executor]
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.wait(0.25):
                peak = max(peak, session_rss(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = proc.communicate()
        wall = time.perf_counter() - start
        stop.set()
        sampler.join()
        frame = Store(url).cells_frame(name)

    trial = float(frame["seconds"].sum())
    ray_line = next((line for line in out.splitlines() if line.startswith("trained ")), "")
    print(f"study {name}: {len(frame)} cells, exit code {proc.returncode}")
    print(f"  {ray_line}")
    print(f"  command wall time   {wall:8.1f} s (process start, imports, any Ray start)")
    print(f"  summed trial time   {trial:8.1f} s (TrialResult.wall_seconds over cells)")
    print(f"  wall / trial        {wall / trial:8.2f} x  (single-process equivalent; target < 1.3)")
    print(f"  peak RSS, all procs {peak / 2**20:8.0f} MiB (driver, workers and any Ray daemons)")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
