"""Runs a study's missing cells on Ray Tune; the driver process is the only database writer.

`plan` (no Ray import) decides what a run would train; `execute` trains it on Ray Tune.
"""

from __future__ import annotations

from robustbench_opt.runner.plan import Plan, check_address, duration, make_plan, ray_address

__all__ = ["Plan", "check_address", "duration", "make_plan", "ray_address"]
