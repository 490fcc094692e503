"""A whole study three ways, in one run: a for-loop in one process, `run --packing off`, and
`run --packing auto`; wall times as ratios to the loop, and the scores of both runs compared.

    .venv/bin/python tests/benchmarks/packed_study.py [STUDY.yaml]

The loop is what a user would write instead of the service: every cell's `run_trial` one after
another in this process (no Ray, no database, no packing). Each `run` is the real command as a
subprocess into a fresh SQLite file, process start and Ray start included.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def loop(study: Path) -> float:
    """Wall seconds of every cell's run_trial, one after another, in this process."""
    import torch

    from robustbench_opt.spec import load_study
    from robustbench_opt.trial.engine import run_trial

    torch.set_num_threads(1)  # as each Ray trial (cpus: 1)
    start = time.perf_counter()
    for config in load_study(study).cells():
        run_trial(config)
    return time.perf_counter() - start


def service(study: Path, packing: str, folder: Path) -> tuple[float, str]:
    """Wall seconds of `run --packing PACKING` and its storage URL."""
    url = f"sqlite:///{folder / f'{packing}.db'}"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "robustbench_opt", "run", str(study), "--storage", url,
         "--packing", packing],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    return time.perf_counter() - start, url


def scores(url: str, study: str):
    from robustbench_opt.analysis import compute_scores, load_study
    from robustbench_opt.storage import Store

    with Store(url, create=False) as store:
        loaded = load_study(store, study)
    return compute_scores(loaded.cells, chance=loaded.chance).set_index("optimizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default=str(ROOT / "studies" / "quickstart.yaml"))
    args = parser.parse_args()
    study = Path(args.study)
    from robustbench_opt.spec import load_study

    name = load_study(study).name
    with tempfile.TemporaryDirectory() as tmp:
        base = loop(study)
        print(f"for-loop of run_trial in one process: {base:.1f} s")
        urls = {}
        for packing in ("off", "auto"):
            seconds, urls[packing] = service(study, packing, Path(tmp))
            print(f"run --packing {packing}: {seconds:.1f} s = {seconds / base:.2f} x the loop")
        off, auto = scores(urls["off"], name), scores(urls["auto"], name)
        for column in ("mean", "variance", "lr_sensitivity"):
            gap = (off[column] - auto[column]).abs().max()
            print(f"max |packed - unpacked| {column}: {gap:.2e}")


if __name__ == "__main__":
    main()
