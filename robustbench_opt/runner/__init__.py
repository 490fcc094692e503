"""Runs a study's missing cells on Ray Tune; the driver process is the only database writer.

`plan` (no Ray import) decides what a run would train; `execute` trains it on Ray Tune;
`orphans` ends the Ray processes a killed driver's local Ray left behind.
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
)

__all__ = ["Cost", "Plan", "check_address", "duration", "estimate_cost", "make_plan", "ray_address"]
