"""`robustbench-opt run` against the plain PyTorch for-loop a user would write for the same grid.

    .venv/bin/python tests/benchmarks/plain_loop.py [--sizes one,18,72]

Sizes: `one` (one cell, one epoch: digits, simple_cnn, adam), `18` (momentum / adam / adamw x
lr {0.1, 0.01, 0.001} x weight decay {0, 0.01}, 8 epochs, batch 64, cosine, test accuracy each
epoch) and `72` (the 18 cells x seeds 0-3). For each size, in this one benchmark run:

- the loop: this file run as `python plain_loop.py --loop ...` in a subprocess; it shares only
  the model class (`SimpleCNN`) with the package: the data come from scikit-learn directly, the
  optimizers from torch.optim, the schedule and evaluation are written out below;
- the service: `python -m robustbench_opt run STUDY.yaml` on a fresh SQLite file, in a
  subprocess; both are timed from the command to its exit.

Prints both wall times, service / loop speed (loop time / service time: above 1, the service
is faster), both mean final test accuracies and, with several seeds, how much the grid's mean
moves from seed to seed (the standard deviation over seeds of each seed's mean over the
grid). The two test sets differ (scikit-learn's train_test_split for the loop, the package's
stratified holdout for the service), which moves every cell by a point or two. The machine's
other load disturbs both alike: compare ratios of one run, not times across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIMIZERS = ("momentum", "adam", "adamw")
LRS = (0.1, 0.01, 0.001)
WEIGHT_DECAYS = (0.0, 0.01)
SIZES = {  # name -> (optimizers, lrs, weight decays, seeds, epochs)
    "one": (("adam",), (0.01,), (0.0,), (0,), 1),
    "18": (OPTIMIZERS, LRS, WEIGHT_DECAYS, (0,), 8),
    "72": (OPTIMIZERS, LRS, WEIGHT_DECAYS, (0, 1, 2, 3), 8),
}
BATCH = 64  # images per step
EVAL_BATCH = 512


def study_yaml(size: str, cpus: str = "1") -> str:
    """The study file of `size`, as a user would write it."""
    optimizers, lrs, wds, seeds, epochs = SIZES[size]
    entries = [
        {"name": "momentum", "kwargs": {"momentum": 0.9}} if name == "momentum" else name
        for name in optimizers
    ]
    return "\n".join(
        [
            f"name: plain_loop_{size}",
            "dataset: digits",
            "model: simple_cnn",
            f"recipe: {{epochs: {epochs}, batch_size: {BATCH}, schedule: cosine}}",
            f"optimizers: {json.dumps(entries)}",
            f"lrs: {list(lrs)}",
            f"weight_decays: {list(wds)}",
            f"seeds: {list(seeds)}",
            f"resources: {{cpus: {cpus}, gpus: 0}}",
            "",
        ]
    )


def plain_loop(size: str) -> list[float]:
    """The user's loop: every cell one after another in this process; final test accuracies."""
    import math

    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from robustbench_opt.models.cnn import SimpleCNN

    optimizers, lrs, wds, seeds, epochs = SIZES[size]
    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, stratify=digits.target, random_state=0
    )
    mean, std = x_train.mean(), x_train.std()
    x_train = torch.from_numpy((x_train - mean) / std)
    x_test = torch.from_numpy((x_test - mean) / std)
    y_train, y_test = torch.from_numpy(y_train).long(), torch.from_numpy(y_test).long()
    accuracies = []
    for name in optimizers:
        for lr in lrs:
            for wd in wds:
                for seed in seeds:
                    torch.manual_seed(seed)
                    model = SimpleCNN(10, (1, 8, 8))
                    if name == "momentum":
                        opt = torch.optim.SGD(
                            model.parameters(), lr=lr, momentum=0.9, weight_decay=wd
                        )
                    elif name == "adam":
                        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
                    else:
                        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
                    for epoch in range(epochs):
                        for group in opt.param_groups:  # cosine, stepped once per epoch
                            group["lr"] = lr * (1 + math.cos(math.pi * epoch / epochs)) / 2
                        model.train()
                        order = torch.randperm(len(x_train))
                        for start in range(0, len(order) - BATCH + 1, BATCH):
                            batch = order[start : start + BATCH]
                            loss = torch.nn.functional.cross_entropy(
                                model(x_train[batch]), y_train[batch]
                            )
                            opt.zero_grad()
                            loss.backward()
                            opt.step()
                        model.eval()
                        correct = 0
                        with torch.no_grad():
                            for start in range(0, len(x_test), EVAL_BATCH):
                                logits = model(x_test[start : start + EVAL_BATCH])
                                hits = logits.argmax(1) == y_test[start : start + EVAL_BATCH]
                                correct += int(hits.sum())
                        accuracy = correct / len(x_test)
                    accuracies.append(accuracy)
    return accuracies


def timed(cmd: list[str], cwd: Path) -> tuple[float, str, int]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc.stdout, proc.returncode


def seed_sd(accuracies: list[float], seeds: list[int]) -> float:
    """The standard deviation over seeds of each seed's mean accuracy (nan with one seed)."""
    means = [
        statistics.fmean(a for a, s in zip(accuracies, seeds, strict=True) if s == seed)
        for seed in sorted(set(seeds))
    ]
    return statistics.stdev(means) if len(means) > 1 else float("nan")


def service(
    size: str, tmp: Path, extra: list[str], cpus: str
) -> tuple[float, list[float], list[int], int, list[str]]:
    """`run` of the size's study on a fresh SQLite file: wall time, final test accuracies of
    the finished cells and their seeds, diverged count, the run's lines saying how it
    trained."""
    from robustbench_opt.storage import Store

    path = tmp / f"plain_loop_{size}.yaml"
    path.write_text(study_yaml(size, cpus))
    url = f"sqlite:///{tmp}/{size}.db"
    cmd = [sys.executable, "-m", "robustbench_opt", "run", str(path), "--storage", url, *extra]
    wall, out, code = timed(cmd, ROOT)
    if code != 0:
        raise SystemExit(f"run exited {code}:\n{out}")
    frame = Store(url).cells_frame(f"plain_loop_{size}").dropna(subset=["final_test_acc"])
    how = ("trials:", "executor", "threads:", "packing", "trained ")
    lines = [ln for ln in out.splitlines() if ln.startswith(how)]
    diverged = int((frame["state"] == "diverged").sum())
    return wall, frame["final_test_acc"].tolist(), frame["seed"].tolist(), diverged, lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="one,18,72", help="comma-separated: one, 18, 72")
    parser.add_argument("--loop", help="internal: run the plain loop of this size, print JSON")
    parser.add_argument("--cpus", default="1", help="the studies' resources.cpus: 1 or auto")
    parser.add_argument("--run-args", default="", help="extra `run` arguments, e.g. --timings")
    args = parser.parse_args()
    if args.loop:
        print(json.dumps(plain_loop(args.loop)))
        return 0
    sys.path.insert(0, str(ROOT))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
    rows = []
    with tempfile.TemporaryDirectory(prefix="rbo-plain-") as tmp:
        for size in args.sizes.split(","):
            loop_wall, out, code = timed([sys.executable, __file__, "--loop", size], ROOT)
            if code != 0:
                raise SystemExit(f"the plain loop exited {code}")
            loop_accs = json.loads(out.strip().splitlines()[-1])
            run = service(size, Path(tmp), args.run_args.split(), args.cpus)
            wall, accs, seeds, diverged, lines = run
            print(f"size {size}: {len(loop_accs)} cells")
            print("\n".join(f"  {line}" for line in lines))
            print(
                f"  loop {loop_wall:.1f} s, run {wall:.1f} s: {loop_wall / wall:.2f}x", flush=True
            )
            size_seeds = list(SIZES[size][3])  # the loop's innermost loop
            loop_seeds = size_seeds * (len(loop_accs) // len(size_seeds))
            spread = (seed_sd(loop_accs, loop_seeds), seed_sd(accs, seeds))
            rows.append((size, len(loop_accs), loop_wall, wall, loop_accs, accs, diverged, spread))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print()
    print(
        "size  cells  loop s  run s  run speed vs loop  loop acc  run acc  run diverged"
        "  seed sd loop, run"
    )
    for size, cells, loop_wall, wall, loop_accs, accs, diverged, spread in rows:
        loop_acc = sum(loop_accs) / len(loop_accs)
        acc = sum(accs) / len(accs) if accs else float("nan")
        print(f"{size:>4}  {cells:5d}  {loop_wall:6.1f}  {wall:5.1f}  {loop_wall / wall:15.2f}x"
              f"  {loop_acc:8.3f}  {acc:7.3f}  {diverged:12d}"
              f"  {spread[0]:7.3f}, {spread[1]:.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
