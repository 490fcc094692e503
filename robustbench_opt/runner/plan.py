"""What a run of a study would train and how, computed without writing anything (and without
Ray): the cells to run, the tasks (Ray trials: single cells and packs) they are trained in, and
the cost. `run --dry-run` prints the plan and `run` prints and executes the same one.

The plan's three measured choices (the cost calibration, `packing: auto`'s probe and `cpus:
auto`'s threads) are made here, in one pass, from the figures `calibrate` times, so that the
dry run and the run make them the same way.
"""

from __future__ import annotations

import functools
import math
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from robustbench_opt.config import TrialConfig
from robustbench_opt.datasets import dataset_info
from robustbench_opt.errors import UserError
from robustbench_opt.runner.calibrate import (
    CALIBRATION_STEPS,
    Calibration,
    StepTimer,
    ThreadTimer,
    choose_threads,
    device_kind,
    local_cpus,
    pack_speedup,
    thread_counts,
    time_threads,
    time_training_images,
)
from robustbench_opt.runner.tasks import make_tasks, pack_size
from robustbench_opt.spec import Resources, StudySpec, diff_specs, identity, spec_hash
from robustbench_opt.states import FINISHED
from robustbench_opt.storage import Store

MAX_DIFF_LINES = 8  # changes named in a refusal
EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only)


@dataclass
class Plan:
    """A study's cells, their registered states, those a run would train, and its tasks."""

    study: str
    spec: dict[str, Any]  # StudySpec.to_dict()
    cells: list[TrialConfig]
    states: dict[str, str]  # registered cell id -> state
    to_run: list[TrialConfig]  # neither finished nor claimed by a live run
    busy: int  # cells claimed by another live run
    measured_epoch_seconds: float | None  # mean epoch wall time recorded in this study
    tasks: list[list[str]] = field(default_factory=list)  # the run's Ray trials, as cell ids
    slots: int = 0  # trials at once that the packs were sized for (0: nothing to run)
    max_concurrent: int | None = None  # the cap on trials at once given to Tune (None: as fit)
    timer: StepTimer | None = field(default=None, repr=False)  # `cost`'s, through `calibration`
    calibration: Calibration | None = field(default=None, repr=False)  # the figures' cache
    grown: bool = False  # a sampled space's points grew: the new points register as new cells
    trial_cpus: float = 1.0  # CPUs (torch threads) per trial: the study's, or measured (auto)
    threads_basis: str = ""  # how `resources.cpus: auto` chose `trial_cpus` ("": not auto)
    packing_note: str | None = None  # what `packing: auto` measured and chose
    executor: str = "ray"  # who trains the trials: "ray" or "local" (`choose_executor`)
    executor_note: str = ""  # why

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)

    @property
    def epochs_to_run(self) -> int:
        return sum(c.recipe.epochs for c in self.to_run)

    @property
    def workers(self) -> int:
        """Trials at once: the slots, or fewer when there are fewer tasks."""
        return min(self.slots, len(self.tasks))

    @functools.cached_property
    def configs(self) -> dict[str, TrialConfig]:
        """Cell id -> config, of the cells to run."""
        return {c.cell_id(self.study): c for c in self.to_run}

    @functools.cached_property
    def cost(self) -> Cost:
        """The tasks' estimated training time (`estimate_cost`; calibrates when first read)."""
        tasks = [[self.configs[cell] for cell in task] for task in self.tasks]
        return estimate_cost(self, tasks, self.timer)


@dataclass(frozen=True)
class Cost:
    """Estimated training time of a plan's trials, one after another (before parallelism)."""

    seconds: float
    basis: str  # how it was estimated, for the user


def estimate_cost(
    plan: Plan, tasks: Sequence[Sequence[TrialConfig]], timer: StepTimer | None = None
) -> Cost:
    """The time of the plan's `tasks` (its trials: single cells and packs, `make_tasks`).

    From this study's recorded epochs when it has any: a trial's epoch (a pack's, when packed)
    took their mean. Else from a short calibration on this machine: a few training steps of
    the first cell to run, alone and, when the plan packs, in a pack of its largest size, scaled
    to every cell's images, passes (two for SAM) and evaluation. Per-batch overheads of a real
    trial (data augmentation, progress reports) are not in it, so it errs low for tiny models."""
    if not plan.to_run:
        return Cost(0.0, "nothing to run")
    if plan.measured_epoch_seconds is not None:
        epochs = sum(max(c.recipe.epochs for c in task) for task in tasks)
        return Cost(
            epochs * plan.measured_epoch_seconds,
            f"{len(tasks)} trials, {epochs} trial epochs x {plan.measured_epoch_seconds:.2g} "
            "s/epoch, measured in this study",
        )
    first, largest = tasks[0][0], max(map(len, tasks))

    def timed_size(task: Sequence[TrialConfig]) -> int:  # packs are timed at the largest size
        return 1 if len(task) == 1 else largest

    sizes = sorted({timed_size(task) for task in tasks})
    rates = {k: (timer or time_training_images)(first, CALIBRATION_STEPS, k) for k in sizes}
    seconds = sum(cell_seconds(c, rates[timed_size(task)]) for task in tasks for c in task)
    timed = [
        f"{rates[k] * 1e3:.2g} ms per image" + ("" if k == 1 else f" and cell in packs of {k}")
        for k in sizes
    ]
    source = plan.calibration.source(first, [(k, 1) for k in sizes]) if plan.calibration else ""
    return Cost(
        seconds,
        f"{plan.epochs_to_run} epochs in {len(tasks)} trials; calibrated by timing training "
        f"steps of {first.model} on one thread of this machine: {', '.join(timed)}"
        + (f", {source}" if source else ""),
    )


def cell_seconds(config: TrialConfig, image_seconds: float) -> float:
    """One cell's training time at `image_seconds` per trained image: per epoch, the training
    images x passes (2 for SAM-family optimizers) plus the evaluated images (test and val) at
    `EVAL_COST`; epochs as the trial will run them (SAM equal compute halves them)."""
    from robustbench_opt.optim import get_info
    from robustbench_opt.trial.rules import epochs_to_run

    info = dataset_info(config.dataset)
    two_pass = get_info(config.optimizer).two_pass
    held_out = math.floor(info.train_size * config.val_fraction)
    trained = (info.train_size - held_out) * (2 if two_pass else 1)
    evaluated = (info.test_size + held_out) * EVAL_COST
    return epochs_to_run(config.recipe, two_pass) * (trained + evaluated) * image_seconds


def make_plan(
    store: Store | None,
    spec: StudySpec,
    study: str,
    *,
    cpus: Callable[[], float] | None = None,
    max_concurrent: int | None = None,
    timer: StepTimer | None = None,
    thread_timer: ThreadTimer | None = None,
    local: bool = True,
    calibration: Calibration | None = None,
) -> Plan:
    """Checks `spec` against what `study` was registered with, lists the cells to train and
    the tasks to train them in (packs sized for `slots_for` trials at once).

    A changed study file under an existing name is a UserError naming the changes. `store`
    None means the database does not exist yet. `cpus` says how many CPUs the run's Ray has
    (default `local_cpus`: a local Ray is started with them); it is asked only when there is
    something to run. `max_concurrent` is `run --max-concurrent`. With `resources.cpus: auto`
    the CPUs per trial are chosen from timed steps at 1, 2, 4, ... threads (`choose_threads`;
    `thread_timer`, default `time_threads`). Every timed figure goes through `calibration`
    (default: this machine's calibration cache), which reads a stored one instead of timing.
    `local`: the run trains on this machine (no Ray cluster to join), where
    `resources.executor: auto` trains CPU trials in local worker processes (`choose_executor`).
    """
    spec_dict = spec.to_dict()
    states: dict[str, str] = {}
    measured, busy, skip, stored, grown = None, 0, set(), {}, False
    record = store.study_record(study) if store is not None else None
    if store is not None and record is not None:
        if record.source != "run" or record.spec_hash != spec_hash(spec_dict):
            raise _refusal(store, study, record.spec, spec_dict, record.source)
        grown = _grown(store, study, record.spec, spec_dict)
        frame = store.cells_frame(study)
        rows = zip(
            frame["workload"], frame["optimizer"], frame["point"], frame["axes"], strict=True
        )
        stored = {
            (workload, label, int(point)): axes
            for workload, label, point, axes in rows
            if point is not None and point == point  # NaN: a grid cell
        }
        states = dict(zip(frame["cell_id"], frame["state"], strict=True))
        stale = set(store.stale_runs(study))
        live = {cid for cid, run in store.claims(study).items() if run not in stale}
        busy = len(live)
        skip = {cid for cid, s in states.items() if s in FINISHED} | live
        epochs = store.epochs_frame(study)
        if not epochs.empty:
            measured = float(epochs["seconds"].mean())
    cells = spec.cells(stored)
    to_run = [c for c in cells if c.cell_id(study) not in skip]
    calibration = calibration or Calibration()
    steps = calibration.step_timer(timer or time_training_images)  # the probe and cost share it
    plan = Plan(study, spec_dict, cells, states, to_run, busy, measured)
    plan.timer, plan.calibration = steps, calibration
    plan.grown = grown
    plan.max_concurrent = max_concurrent or spec.max_concurrent
    if to_run:
        have = (cpus or local_cpus)()
        plan.trial_cpus = 1.0 if spec.resources.cpus == "auto" else float(spec.resources.cpus)
        if spec.resources.cpus == "auto" and to_run[0].device != "cuda" and have > 1:
            threads = calibration.thread_timer(thread_timer or time_threads)
            rates = {t: threads(to_run[0], t) for t in thread_counts(have)}
            plan.trial_cpus = float(choose_threads(rates, len(to_run), int(have)))
            plan.threads_basis = ", ".join(
                f"{t} thread{'s' * (t > 1)} {rate * 1e3:.2g} ms per image"
                for t, rate in rates.items()
            )
            plan.threads_basis += f", {calibration.source(to_run[0], [(1, t) for t in rates])}"
        plan.slots = slots_for(spec, plan.max_concurrent, have, plan.trial_cpus)
        resources = spec.resources
        plan.tasks = make_tasks(plan.configs, resources, plan.slots)
        largest = max(map(len, plan.tasks))
        if resources.packing == "auto" and largest > 1:
            config = plan.configs[plan.tasks[0][0]]
            speedup = pack_speedup(config, largest, steps)
            measured = f"a pack of {largest} measured {speedup:.2g}x on {device_kind(config)}"
            source = calibration.source(config, [(1, 1), (largest, 1)])
            measured += f", {source}" if source else ""
            size = pack_size(plan.configs, resources, plan.slots, largest, speedup)
            plan.tasks = make_tasks(plan.configs, resources, plan.slots, size)
            packs = max(map(len, plan.tasks))
            trials = f"{len(plan.tasks)} trials on {plan.slots} slot{'s' * (plan.slots > 1)}"
            if packs > 1:
                why = f"on: packs of up to {packs} finish soonest, {trials}; "
            elif speedup >= 1:
                why = f"off: one cell per trial finishes soonest, {trials}; "
            else:
                why = "off: "
            plan.packing_note = f"packing {why}{measured}"
        choose_executor(plan, resources, local)
    return plan


def _grown(store: Store, study: str, old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a sampled space's `points` grew since the study was registered (its first points
    stay the same cells); a smaller `points` is refused: stored points are never dropped."""
    before = (old.get("space") or {}).get("points")
    after = (new.get("space") or {}).get("points")
    if before is None or after is None or after == before:
        return False
    if after < before:
        raise UserError(
            f"study {study!r} in {store.display_url} holds {before} points of its space; points "
            f"can grow, not shrink (the file says {after}): set points to {before} or more, or "
            "start a new study with --study-name NEW"
        )
    return True


def slots_for(
    spec: StudySpec, max_concurrent: int | None, cpus: float, per_trial: float | None = None
) -> int:
    """Trials a run has at once: `max_concurrent` when set (the command line's, else the
    study's), else as many as `cpus` hold at `per_trial` CPUs per trial (default the study's)."""
    per_trial = float(spec.resources.cpus) if per_trial is None else per_trial
    return max_concurrent or max(1, int(cpus // per_trial))


def run_cpus(address: str | None) -> float:
    """The CPUs the run's Ray will have: the cluster's at `address` or $RAY_ADDRESS (joined to
    ask; the run reuses the connection), else this machine's (`local_cpus`), which a local Ray
    is started with."""
    address = ray_address(address)
    if address is None:
        return local_cpus()
    from robustbench_opt.runner.connect import cluster_cpus  # imports Ray

    return cluster_cpus(address)


def _refusal(
    store: Store, study: str, old: dict[str, Any], new: dict[str, Any], source: str
) -> UserError:
    if source != "run":
        return UserError(
            f"study {study!r} in {store.display_url} was imported, not run; "
            "run this file under another name with --study-name NEW"
        )
    changes = diff_specs(identity(old), identity(new))
    shown = "; ".join(changes[:MAX_DIFF_LINES])
    if len(changes) > MAX_DIFF_LINES:
        shown += f"; ... {len(changes) - MAX_DIFF_LINES} more"
    return UserError(
        f"study {study!r} in {store.display_url} was run from a different study file "
        f"({shown}); restore the file, or start a new study with --study-name NEW"
    )


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h10m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def ray_address(address: str | None) -> str | None:
    """The cluster to join: --address, else $RAY_ADDRESS; None starts a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_address(address: str) -> None:
    """Fails fast, in one line, when a HOST:PORT address does not answer."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"invalid Ray address {address!r}; valid: HOST:PORT, ray://HOST:PORT or auto; "
            "fix --address or $RAY_ADDRESS"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise UserError(
            f"cannot reach the Ray cluster at {address!r}: {err.strerror or err}; "
            "check --address or $RAY_ADDRESS and that the head node is up"
        ) from None


def choose_executor(plan: Plan, resources: Resources, local: bool) -> None:
    """Sets `plan.executor` and says why (`executor_note`): `resources.executor` when it names
    one; else Ray on a cluster and for trials on GPUs (Ray schedules them, shares of one
    included), and local worker processes for CPU trials on this machine, which train the same
    tasks without Ray's fixed cost (starting it, a first worker importing torch, shutting it
    down: 8-10 s on a 2-core machine)."""
    chosen = resources.executor
    if chosen == "local" and not local:
        raise UserError(
            "resources.executor is local, but the run joins a Ray cluster (--address or "
            "$RAY_ADDRESS): local workers train on this machine only; set executor to "
            "ray or auto, or run without an address"
        )
    if chosen != "auto":
        plan.executor, why = chosen, "resources.executor"
    elif not local:
        plan.executor, why = "ray", "the run joins a Ray cluster"
    elif resources.gpus not in (0, "auto") or device_kind(plan.to_run[0]) != "cpu":
        plan.executor, why = "ray", "trials train on GPUs, which Ray schedules"
    else:
        plan.executor, why = "local", "CPU trials on this machine, no Ray to start"
    plan.executor_note = f"executor {plan.executor}: {why}"
    if plan.executor == "local":
        threads = f"{plan.trial_cpus:g} thread{'s' * (plan.trial_cpus != 1)}"
        plan.executor_note += (
            f" ({plan.workers} worker process{'es' * (plan.workers > 1)} of {threads} "
            "forked by this one)"
        )
