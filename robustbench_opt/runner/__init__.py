"""Runs a study's missing cells on Ray Tune; the driver process is the only database writer.

`plan` (no Ray import) decides what a run would train and in which tasks (`tasks`: cells into
trials and packs; `memory`: how much memory and GPU a trial takes); `execute` trains the plan
on Ray Tune through its rooms: `connect` (reaching Ray, checking every node), `feed` (handing
out tasks, claiming cells), `worker` (what a trial runs), `recorder` (writing what trials
report), `interrupt` (Ctrl-C); `orphans` ends the Ray processes a killed driver's local Ray
left behind.
"""

from __future__ import annotations

from robustbench_opt.runner.plan import (
    Cost,
    Plan,
    check_address,
    duration,
    estimate_cost,
    make_plan,
    ray_address,
    run_cpus,
)

__all__ = [
    "Cost",
    "Plan",
    "check_address",
    "duration",
    "estimate_cost",
    "make_plan",
    "ray_address",
    "run_cpus",
]
