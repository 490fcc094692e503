"""Benchmark: `scores` and `report` on a synthetic study of 10,000 trials.

The database is built through the storage code (`Store.import_cells`), then each stage is
timed. Rerun with:  .venv/bin/python tests/benchmarks/bench_scores_report.py [--trials N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna

from robustbench_opt.analysis.scores import compute_scores, expected_best_curves
from robustbench_opt.analysis.uncertainty import bootstrap
from robustbench_opt.cli import main
from robustbench_opt.storage import Store


def synthetic_rows(trials: int, seed: int = 0) -> list[dict]:
    """10 optimizers x lr x wd x seeds grid with a smooth accuracy surface and some divergence."""
    rng = np.random.default_rng(seed)
    optimizers, seeds = 10, 10
    side = max(1, round(math.sqrt(trials / (optimizers * seeds))))
    lrs, wds = np.logspace(-4, 0, side), np.logspace(-5, -1, side)
    rows = []
    for o in range(optimizers):
        for i, lr in enumerate(lrs):
            for j, wd in enumerate(wds):
                for s in range(seeds):
                    if len(rows) == trials:
                        return rows
                    diverged = bool(i == side - 1 and o % 3 == 0)
                    acc = 0.1 if diverged else 0.95 - 0.02 * abs(i - side / 2) - 0.01 * abs(j - 2)
                    rows.append(
                        {
                            "optimizer": f"opt{o}", "variant": "default", "lr": float(lr),
                            "weight_decay": float(wd), "seed": s, "diverged": diverged,
                            "final_test_acc": float(np.clip(acc + rng.normal(0, 0.003), 0, 1)),
                        }
                    )  # fmt: skip
    return rows


def timed(label: str, fn, results: dict[str, float]):
    start = time.perf_counter()
    out = fn()
    results[label] = time.perf_counter() - start
    print(f"{label:<42} {results[label]:8.2f} s", flush=True)
    return out


def quiet(argv: list[str]) -> int:
    with contextlib.redirect_stdout(io.StringIO()):
        return main(argv)


def run(trials: int, folder: Path) -> dict[str, float]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{folder / 'bench.db'}"
    results: dict[str, float] = {}
    rows = synthetic_rows(trials)
    store = Store(url)
    timed(
        f"build: import_cells({len(rows)} rows)",
        lambda: store.import_cells("bench", rows, "bench"),
        results,
    )
    cells = timed("read: cells_frame", lambda: store.cells_frame("bench"), results)
    timed("compute_scores (pure pandas)", lambda: compute_scores(cells, chance=0.1), results)
    timed("bootstrap, 2000 resamples", lambda: bootstrap(cells, chance=0.1), results)
    timed(
        "expected_best_curves (pure numpy)",
        lambda: expected_best_curves(cells, chance=0.1),
        results,
    )
    report = folder / "bench.html"
    commands = {
        "cli: scores": ["scores", "bench"],
        "cli: table --kind lr-wd": ["table", "bench", "--optimizer", "opt0"],
        "cli: report -o bench.html": ["report", "bench", "-o", str(report)],
    }
    for label, argv in commands.items():
        code = timed(label, lambda argv=argv: quiet([*argv, "--storage", url]), results)
        assert code == 0, label
    print(f"report size {report.stat().st_size / 1e6:.1f} MB; {len(cells)} trials; "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs")  # fmt: skip
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--dir", help="where the database goes (default: a temporary folder)")
    args = parser.parse_args()
    if args.dir:
        run(args.trials, Path(args.dir))
    else:
        base = "/dev/shm" if Path("/dev/shm").is_dir() else None  # storage writes are fsync-bound
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            run(args.trials, Path(tmp))
