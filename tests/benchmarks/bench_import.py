"""Benchmark: `robustbench-opt import` of a synthetic 10,000-row CSV into a new SQLite file.

Times the whole command and, separately, reading the CSV and writing the rows. Rerun with:
    .venv/bin/python tests/benchmarks/bench_import.py [--rows N]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import platform
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).parent))
from bench_scores_report import synthetic_rows  # noqa: E402

from robustbench_opt.analysis.results_csv import read_results_csv  # noqa: E402
from robustbench_opt.cli import main  # noqa: E402


def write_csv(rows: list[dict], path: Path) -> None:
    columns = ["optimizer", "variant", "lr", "weight_decay", "seed", "diverged", "test_acc"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for r in rows:
            writer.writerow([r["optimizer"], r["variant"], repr(r["lr"]), repr(r["weight_decay"]),
                             r["seed"], r["diverged"], repr(r["final_test_acc"])])  # fmt: skip


def run(n: int, folder: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = folder / "results.csv"
    write_csv(synthetic_rows(n), path)
    start = time.perf_counter()
    rows, _ = read_results_csv(path)
    read_s = time.perf_counter() - start
    url = f"sqlite:///{folder / 'bench.db'}"
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["import", str(path), "--study", "bench", "--storage", url])
    total_s = time.perf_counter() - start
    assert code == 0
    print(f"{platform.node()}: {len(rows)} rows")
    print(f"read_results_csv      {read_s:8.2f} s")
    print(f"import command        {total_s:8.2f} s  ({1000 * total_s / len(rows):.2f} ms/row)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args.rows, Path(tmp))
