"""`robustbench-opt run STUDY.yaml` (train the missing cells on Ray Tune) and `status`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import pandas as pd
from sqlalchemy.engine import make_url

from robustbench_opt.cli.argtypes import positive_int
from robustbench_opt.cli.output import print_frame
from robustbench_opt.cli.results import print_scores, score_study
from robustbench_opt.errors import unknown
from robustbench_opt.runner import Plan, check_address, duration, make_plan, ray_address
from robustbench_opt.spec import load_study
from robustbench_opt.storage import Store, resolve_url
from robustbench_opt.storage.tables import FINISHED, STATES

STORAGE_HELP = "database URL (default: $ROBUSTBENCH_STORAGE, else sqlite:///storage/robustbench.db)"


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the `run` and `status` subcommands."""
    p = sub.add_parser(
        "run",
        help="train a study's missing or failed cells on Ray Tune",
        description="Train every cell of a study that is not finished yet; rerun to resume.",
        allow_abbrev=False,
    )
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.add_argument(
        "--address", help="join this Ray cluster (HOST:PORT; default $RAY_ADDRESS, else local)"
    )
    p.add_argument(
        "--max-concurrent", type=positive_int, help="at most N trials at once (default: as fits)"
    )
    p.add_argument(
        "--data-dir",
        help="CIFAR: directory with the data set files (overrides the study's data_dir)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument(
        "--study-name",
        help="store under this name instead of the file's `name` (to run a changed file anew)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "status",
        help="cells done, diverged, failed, running and pending per optimizer",
        allow_abbrev=False,
    )
    p.add_argument("study", nargs="?", help="one study (default: all)")
    p.add_argument("--storage", help=STORAGE_HELP)
    p.set_defaults(func=cmd_status)


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_study(args.study_file)
    data_dir = args.data_dir or spec.data_dir
    if data_dir is not None:  # absolute: Ray runs each trial in its own working directory
        spec = dataclasses.replace(spec, data_dir=os.path.abspath(data_dir))
    study = args.study_name or spec.name
    url = resolve_url(args.storage)
    address = ray_address(args.address)
    if address and not args.dry_run:
        check_address(address)  # before the database is opened (and a new file created)
    store = Store(url) if (not args.dry_run or Store.exists(url)) else None
    plan = make_plan(store, spec, study)
    shown = make_url(url).render_as_string(hide_password=True)  # output ends up in logs
    _print_plan(plan, args.study_file, shown)
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    assert store is not None
    if not plan.to_run:
        if plan.busy:
            print(f"nothing to train: the {plan.busy} unfinished cells are claimed by another run")
        else:
            print(f"nothing to train: all {len(plan.cells)} cells are finished")
    else:
        from robustbench_opt.runner.execute import run_plan

        outcome = run_plan(
            store, spec, plan, address=args.address, max_concurrent=args.max_concurrent
        )
        ratio = outcome.wall_seconds / outcome.trial_seconds if outcome.trial_seconds else 0.0
        print(
            f"trained {len(outcome.claimed)} cells in {duration(outcome.wall_seconds)} "
            f"(trial time {duration(outcome.trial_seconds)}, wall/trial {ratio:.2f})"
        )
    frame = store.cells_frame(study)
    if frame["state"].isin(FINISHED).any():
        print_scores(score_study(store, study))  # exactly what `scores STUDY` prints
    else:
        print("no finished cells yet")
    _print_where(study, url, shown)
    failed = frame[frame["state"] == "failed"]
    for row in failed.itertuples():
        print(
            f"failed: cell {row.cell_id} ({row.optimizer}, {row.variant}, lr={row.lr:g}, "
            f"wd={row.weight_decay:g}, seed={row.seed}): {row.error}",
            file=sys.stderr,
        )
    if len(failed):
        print(f"{len(failed)} cells failed; run again to retry them", file=sys.stderr)
        return 1
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    url = resolve_url(args.storage)
    store = Store(url, create=False)
    names = [s.name for s in store.list_studies()]
    if args.study is not None and args.study not in names:
        raise unknown("study", args.study, names, f"see `robustbench-opt status --storage {url}`")
    if not names:
        print(f"no studies in {store.display_url}")
        return 0
    for name in [args.study] if args.study else names:
        frame = store.cells_frame(name)
        table = status_table(frame).rename_axis("optimizer").reset_index()
        print_frame(table, title=f"study {name}: {len(frame)} cells")
        stale = store.stale_runs(name)
        if stale:
            n = sum(1 for run in store.claims(name).values() if run in stale)
            print(f"  {n} running cells belong to stopped runs; the next `run` retries them")
    return 0


def status_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Cells per optimizer (rows) and state (columns), with a total row."""
    table = pd.crosstab(frame["optimizer"], frame["state"]).reindex(columns=list(STATES))
    table = table.fillna(0).astype(int)
    table.loc["total"] = table.sum()
    table.columns.name = None
    return table


def _print_plan(plan: Plan, path: str, url: str) -> None:
    n_run = len(plan.to_run)
    total_s = plan.epochs_to_run * plan.seconds_per_epoch
    source = "measured" if plan.measured else "assumed"
    print(f"study {plan.study} ({path}) in {url}")
    print(
        f"cells: {len(plan.cells)} total, {plan.count('done')} done, "
        f"{plan.count('diverged')} diverged, {plan.count('failed')} failed, "
        f"{plan.busy} running elsewhere; {n_run} to run"
    )
    if n_run:
        print(
            f"cost: {plan.epochs_to_run} epochs x {plan.seconds_per_epoch:.2g} s/epoch "
            f"({source}, one trial) = {duration(total_s)} of training, before parallelism"
        )


def _print_where(study: str, url: str, shown: str) -> None:
    """Where the results are and how to look at them; `shown` is `url` without its password."""
    flag = f" --storage {shown}" if url != resolve_url(None) else ""
    print(f"results: study {study!r} in {shown}")
    print(f"  robustbench-opt status {study}{flag}")
    print(f"  robustbench-opt scores {study}{flag}")
    print(f"  robustbench-opt report {study}{flag}")
    print(f"  optuna-dashboard {shown}")
