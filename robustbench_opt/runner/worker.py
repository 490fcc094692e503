"""The worker side of a run: what one Ray trial does, and the resources Tune gives it.

A trial rebuilds its cells' configs from the group config Tune holds once and its own per-cell
values, trains them with a trainer (`TrialFn`: the trial engine, or what a test injects), and
reports each cell's epochs and result through `tune.report` (`reports`). Workers hold no
database code or credentials; the driver's recorder writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray
from ray import tune

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult
from robustbench_opt.errors import UserError
from robustbench_opt.runner.reports import epoch_report, result_report
from robustbench_opt.spec import StudySpec
from robustbench_opt.trial.hooks import EpochHook, ResultHook, TrialFn

# What Tune is asked for per trial: fixed, or per task (`gpus: auto`). Not `spec.Resources`,
# the study's own request that this is derived from.
RayResources = dict[str, float] | Callable[[dict[str, Any]], dict[str, float]]


def default_trial_fn(
    configs: list[TrialConfig], on_epoch: EpochHook, on_result: ResultHook
) -> None:
    """Trains a task's cells with the trial engine (torch is imported in the worker only), on
    as many torch threads as the trial was given CPUs."""
    import torch

    from robustbench_opt.trial.engine import train_cells

    given = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if given:
        torch.set_num_threads(max(1, int(given)))
    train_cells(configs, on_epoch, on_result)


def trainable(params: dict[str, Any], groups: list[dict[str, Any]], trial_fn: TrialFn) -> None:
    """One Tune trial (worker side): `trial_fn` trains one cell or a pack, reported per cell."""
    ready = time.time()  # this worker is up and running the trial (`run --timings`)
    ids, shared = params["cells"], groups[params["group"]]
    cells = [TrialConfig.from_dict(shared | values) for values in params["per_cell"]]

    def on_epoch(k: int, record: EpochRecord) -> None:
        tune.report(epoch_report(ids[k], record, ready))

    def on_result(k: int, result: TrialResult) -> None:
        tune.report(result_report(ids[k], result, ready))

    trial_fn(cells, on_epoch, on_result)


def trial_resources(
    spec: StudySpec, configs: dict[str, TrialConfig], cpus: float | None = None
) -> RayResources:
    """Ray resources per trial (`cpus`: the plan's CPUs per trial, default the study's);
    refuses what the cluster could never schedule."""
    cluster = ray.cluster_resources()
    cpus = float(spec.resources.cpus if cpus is None else cpus)
    gpus = spec.resources.gpus
    have_cpu, have_gpu = cluster.get("CPU", 0.0), cluster.get("GPU", 0.0)
    if cpus > have_cpu:
        raise UserError(
            f"resources.cpus={cpus:g} per trial but the Ray cluster has {have_cpu:g} CPUs; "
            "lower resources.cpus in the study file or add nodes"
        )
    if gpus == "auto":
        if have_gpu == 0:
            return {"cpu": cpus, "gpu": 0.0}
        from robustbench_opt.runner.memory import gpu_fraction  # imports torch: only when needed

        return lambda params: {
            "cpu": cpus,
            "gpu": gpu_fraction(configs[params["cells"][0]], len(params["cells"])),
        }
    if gpus > 0 and have_gpu == 0:
        raise UserError(
            f"resources.gpus={gpus:g} per trial but the Ray cluster has no GPU; "
            "set resources.gpus to 0 or auto, or join a cluster with GPUs via --address"
        )
    return {"cpu": cpus, "gpu": float(gpus)}
