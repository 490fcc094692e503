"""Runs a study's missing cells in local worker processes or on Ray Tune; the driver process
is the only database writer.

`plan` (no Ray import) decides what a run would train, in which tasks (`tasks`: cells into
trials and packs; `memory`: how much memory and GPU a trial takes) and by whom; `calibrate`
times the figures it decides from. `execute` trains the plan through its rooms: `feed`
(handing out tasks, claiming cells), `recorder` (writing what trials report), `interrupt`
(Ctrl-C), and either `local` (worker processes `forked` from the driver, on this machine) or
Ray Tune (`tune_fit`, `connect`: reaching Ray, checking every node, `worker`: what a Ray trial
runs); `orphans` ends the Ray processes a killed driver's local Ray left behind.
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
