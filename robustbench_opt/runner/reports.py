"""What a trial reports to the driver, per cell: plain values (JSON strings), so that a Ray
worker sends them through `tune.report` and a local worker through its pipe alike, and the
recorder reads one format."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from robustbench_opt.config import EpochRecord, TrialResult


def epoch_report(cell: str, record: EpochRecord, ready: float) -> dict[str, Any]:
    """What a trial reports for one epoch of `cell` (`ready`: when its worker began it)."""
    return {"cell": cell, "rbo_epoch": json.dumps(dataclasses.asdict(record)), "rbo_ready": ready}


def result_report(cell: str, result: TrialResult, ready: float) -> dict[str, Any]:
    """What a trial reports when `cell` finished."""
    return {"cell": cell, "rbo_result": json.dumps(result.to_dict()), "rbo_ready": ready}
