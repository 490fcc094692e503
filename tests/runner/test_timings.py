"""`run --timings`: phases add up against the wall time since the process started."""

from __future__ import annotations

import time

import pytest

from robustbench_opt.runner.timings import Timings, process_start


def test_the_table_lists_phases_in_order_and_the_rest_as_other() -> None:
    timings = Timings()
    timings.add("trials", 2.0)
    timings.add("imports", 1.0)
    timings.add("imports", 0.5)  # phases accumulate
    timings.add("recording", 0.25)  # inside the trials: not added to the sum
    now = process_start() + 10.0
    lines = timings.table(now).splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["imports", "trials", "(recording,"]
    assert lines[1].split()[1] == "1.50" and lines[2].split()[1] == "2.00"
    assert lines[-2].split()[:2] == ["other", "6.50"]  # 10 - 1.5 - 2
    assert lines[-1].split()[-1] == "10.00"


def test_a_phase_times_its_block_and_unknown_phases_are_refused() -> None:
    timings = Timings()
    with timings.phase("scores"):
        time.sleep(0.05)
    assert 0.05 <= timings.seconds["scores"] < 5
    with pytest.raises(ValueError, match="unknown phase 'score'; valid: imports"):
        timings.add("score", 1.0)


def test_the_process_started_before_now() -> None:
    assert 0 <= time.time() - process_start() < 24 * 3600
