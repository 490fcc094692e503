"""`robustbench-opt run STUDY.yaml` (train the missing cells on Ray Tune) and `status`."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import make_url

from robustbench_opt.analysis.study import score_study
from robustbench_opt.cli.argtypes import positive_int
from robustbench_opt.cli.output import print_frame
from robustbench_opt.cli.results import print_scores
from robustbench_opt.errors import unknown
from robustbench_opt.runner import (
    Plan,
    check_address,
    duration,
    forked,
    make_plan,
    ray_address,
    run_cpus,
)
from robustbench_opt.runner.calibrate import Calibration
from robustbench_opt.runner.timings import TIMINGS, process_start
from robustbench_opt.spec import StudySpec, load_study
from robustbench_opt.spec.checks import EXECUTORS
from robustbench_opt.states import FAILED, STATES
from robustbench_opt.storage import Store, resolve_url

STORAGE_HELP = "database URL (default: $ROBUSTBENCH_STORAGE, else sqlite:///storage/robustbench.db)"


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the `run` and `status` subcommands."""
    p = sub.add_parser(
        "run",
        help="train a study's missing or failed cells (local worker processes or Ray Tune)",
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
    p.add_argument(
        "--packing",
        type=_packing,
        help="auto, off or the most cells per packed trial (overrides resources.packing)",
    )
    p.add_argument(
        "--executor",
        choices=EXECUTORS,
        help="who trains: local (worker processes on this machine), ray, or auto "
        "(overrides resources.executor)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan, write nothing to the database (timed figures are cached)",
    )
    p.add_argument(
        "--recalibrate",
        action="store_true",
        help="time the plan's figures anew instead of reading this machine's calibration "
        "cache ($ROBUSTBENCH_CACHE, else ~/.cache/robustbench-opt), and store them there",
    )
    p.add_argument(
        "--timings", action="store_true", help="print where the run's wall time went, by phase"
    )
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
    TIMINGS.add("imports", time.time() - process_start())
    try:
        return _run(args)
    finally:
        if args.timings:
            print(TIMINGS.table())


def _run(args: argparse.Namespace) -> int:
    with TIMINGS.phase("spec and plan"):
        spec, study, url, address, store, plan = _planned(args)
    shown = make_url(url).render_as_string(hide_password=True)  # output ends up in logs
    if plan.to_run:
        with TIMINGS.phase("calibration"):
            plan.cost  # noqa: B018 (calibrates on first read)
    _print_plan(plan, args.study_file, shown, spec, address)
    if args.dry_run:
        print("dry run: nothing written")
        return 0
    with TIMINGS.phase("storage setup"):
        store = store or Store(url)
    return _train(args, spec, study, url, shown, store, plan)


def _planned(
    args: argparse.Namespace,
) -> tuple[StudySpec, str, str, str | None, Store | None, Plan]:
    """The study file as the command line amends it, and the plan a run of it executes."""
    forked.one_thread()  # before any torch work: local workers and timers are forked from here
    spec = load_study(args.study_file)
    data_dir = args.data_dir or spec.data_dir
    if data_dir is not None:  # absolute: Ray runs each trial in its own working directory
        spec = dataclasses.replace(spec, data_dir=os.path.abspath(data_dir))
    for key in ("packing", "executor"):
        if getattr(args, key) is not None:
            resources = dataclasses.replace(spec.resources, **{key: getattr(args, key)})
            spec = dataclasses.replace(spec, resources=resources)
    study = args.study_name or spec.name
    url = resolve_url(args.storage)
    address = ray_address(args.address)
    if address and not args.dry_run:
        check_address(address)  # before the database is opened (and a new file created)
    store = Store(url) if Store.exists(url) else None  # a new database waits for the checks

    # The plan the run executes, exactly: a dry run computes and prints the same one.
    def cpus() -> float:  # asked only when there is something to run
        if not args.dry_run:
            # This machine trains: its data must be there before Ray starts or anything is
            # written. A cluster's nodes are checked by run_plan's preflight, before any claim.
            if not address:
                from robustbench_opt.data import check_data

                for dataset in spec.datasets:
                    check_data(dataset, spec.data_dir, spec.download)
            if address or spec.resources.executor == "ray":  # Ray starts now, beside the plan
                from robustbench_opt.runner.connect import connect_early  # imports Ray

                connect_early(address)
        return run_cpus(address)

    calibration = Calibration(recalibrate=args.recalibrate)
    plan = make_plan(
        store,
        spec,
        study,
        cpus=cpus,
        max_concurrent=args.max_concurrent,
        calibration=calibration,
        local=not address,
    )
    return spec, study, url, address, store, plan


def _train(
    args: argparse.Namespace,
    spec: StudySpec,
    study: str,
    url: str,
    shown: str,
    store: Store,
    plan: Plan,
) -> int:
    """Trains the plan's cells, then prints the scores, where the results are and what failed."""
    released: list[str] = []
    if not plan.to_run:
        if plan.busy:
            print(f"nothing to train: the {plan.busy} unfinished cells are claimed by another run")
        else:
            print(f"nothing to train: all {len(plan.cells)} cells are finished")
    else:
        from robustbench_opt.runner.execute import run_plan

        outcome = run_plan(store, spec, plan, address=args.address)
        print(
            run_summary(
                outcome.finished, outcome.wall_seconds, outcome.trial_seconds, plan.executor
            )
        )
        if outcome.retried:
            print(
                f"retried {len(outcome.retried)} cells in this run: their worker process or "
                f"node was lost ({next(iter(outcome.retried.values()))})",
                file=sys.stderr,
            )
        released = outcome.released
        if released or outcome.interrupted:
            cause = f" by {outcome.interrupted}" if outcome.interrupted else ""
            print(
                f"stopped early{cause}: {len(outcome.released)} claimed cells did not finish and "
                "were released (a rerun trains them); finished cells are kept",
                file=sys.stderr,
            )
    with TIMINGS.phase("scores"):
        [counts] = [s for s in store.list_studies() if s.name == study]  # one GROUP BY
        if counts.done + counts.diverged:
            scored = score_study(store, study)
            print_scores(scored)  # exactly what `scores STUDY` prints
            frame = scored.cells  # read once: 10^5 rows take seconds
        else:
            print("no finished cells yet")
            frame = store.cells_frame(study)
        _print_where(study, url, shown)
    failed = frame[(frame["state"] == FAILED) & ~frame["cell_id"].isin(released)]
    for row in failed.itertuples():
        print(
            f"failed: cell {row.cell_id} ({row.optimizer}, {row.variant}, lr={row.lr:g}, "
            f"wd={row.weight_decay:g}, seed={row.seed}): {row.error}",
            file=sys.stderr,
        )
    if len(failed):
        print(f"{len(failed)} cells failed; run again to retry them", file=sys.stderr)
    return 1 if len(failed) or released else 0


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


def run_summary(
    cells: int, wall_seconds: float, trial_seconds: float, executor: str = "ray"
) -> str:
    """What a run took, in words: its wall time against the trials' summed training time."""
    line = f"trained {cells} cells in {duration(wall_seconds)} of wall time"
    if not trial_seconds:
        return line
    ratio = wall_seconds / trial_seconds
    rest = "starting Ray and scheduling trials" if executor == "ray" else "claims and records"
    why = "trials ran in parallel" if ratio < 1 else f"the rest is {rest}"
    return (
        f"{line}; the trials themselves took {duration(trial_seconds)} added up, so the run "
        f"took {ratio:.2f} x their training time ({why})"
    )


def _packing(text: str) -> int | str:
    if text in ("auto", "off"):
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto, off or an integer >= 1, got {text!r}")
    return value


def _print_plan(plan: Plan, path: str, url: str, spec: StudySpec, address: str | None) -> None:
    """The plan in a few lines: cells by state, its trials (packs) and their cost."""
    n_run = len(plan.to_run)
    print(f"study {plan.study} ({path}) in {url}")
    print(
        f"cells: {len(plan.cells)} total, {plan.count('done')} done, "
        f"{plan.count('diverged')} diverged, {plan.count('failed')} failed, "
        f"{plan.busy} running elsewhere; {n_run} to run"
    )
    if n_run:
        sizes = Counter(len(task) for task in plan.tasks)
        shape = " + ".join(f"{n} x {k}" for k, n in sorted(sizes.items(), reverse=True))
        where = f"on the Ray cluster at {address}" if address else "on this machine"
        print(
            f"trials: {len(plan.tasks)} (packing {spec.resources.packing}: up to "
            f"{max(sizes)} cells per trial, {shape} cells, for {plan.slots} slots {where})"
        )
        print(plan.executor_note)
        threads = f"{plan.trial_cpus:g} CPU{'s' * (plan.trial_cpus != 1)} (torch threads) per trial"
        if plan.threads_basis:
            threads += f", chosen by timing training steps: {plan.threads_basis}"
        print(f"threads: {threads}")
        if plan.packing_note:
            print(f"{plan.packing_note} (cells per second against one cell alone)")
        print(
            f"cost: about {duration(plan.cost.seconds)} of training, one trial after another, "
            f"before parallelism ({plan.cost.basis})"
        )


def _print_where(study: str, url: str, shown: str) -> None:
    """Where the results are and how to look at them; `shown` is `url` without its password."""
    flag = f" --storage {shlex.quote(shown)}" if url != resolve_url(None) else ""
    me = command_prefix()
    print(f"results: study {study!r} in {shown}")
    print(f"  {me} status {study}{flag}")
    print(f"  {me} scores {study}{flag}")
    print(f"  {me} report {study}{flag} -o {shlex.quote(study)}-report.html")
    if importlib.util.find_spec("optuna_dashboard") is not None:
        dashboard = Path(sys.executable).with_name("optuna-dashboard")
        exe = _shown(str(dashboard)) if dashboard.exists() else "optuna-dashboard"
        print(f"  {exe} {shlex.quote(shown)}")
    else:
        pip = _shown(str(Path(sys.executable).with_name("pip")))
        print(f"  optuna-dashboard: {pip} install -e '.[dashboard]', then optuna-dashboard {shown}")


def command_prefix(argv0: str | None = None) -> str:
    """How to run this program again: the script as it was invoked (`.venv/bin/robustbench-opt`
    when given with a path, bare when found on PATH), else `PYTHON -m robustbench_opt`."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if Path(argv0).name == "robustbench-opt":
        return _shown(argv0) if os.sep in argv0 else "robustbench-opt"
    return f"{_shown(sys.executable)} -m robustbench_opt"


def _shown(path: str) -> str:
    """`path` relative to the working directory when it lies below it, else absolute."""
    absolute = Path(path).absolute()
    try:
        shown = str(absolute.relative_to(Path.cwd()))
    except ValueError:
        shown = str(absolute)
    return shlex.quote(shown if os.sep in shown else f".{os.sep}{shown}")
