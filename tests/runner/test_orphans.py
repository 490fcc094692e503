"""`runner.orphans` with real processes: what a dead driver's record lists is ended, by pid and
start time; live drivers' records and reused pids are left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustbench_opt.runner import orphans

pytestmark = pytest.mark.skipif(not orphans.SUPPORTED, reason="reads /proc (Linux)")


@pytest.fixture(autouse=True)
def records_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records go to tmp_path: never the real ones of runs on this machine."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture
def spawn() -> Iterator:
    """`spawn(*cmd) -> Popen`; every process started is killed and reaped at the end."""
    procs: list[subprocess.Popen] = []

    def start(*cmd: str) -> subprocess.Popen:
        procs.append(
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        )
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def dead_driver(spawn) -> tuple[int, int]:
    """(pid, start time) of a process that has ended: a killed driver."""
    proc = spawn("sleep", "60")
    started = orphans.start_time(proc.pid)
    proc.kill()
    proc.wait()
    assert orphans.start_time(proc.pid) is None
    return proc.pid, started


def write_record(driver: tuple[int, int], processes: list[tuple[int, int]]) -> Path:
    orphans.records_dir().mkdir(mode=0o700, exist_ok=True)
    path = orphans.records_dir() / f"{driver[0]}.json"
    path.write_text(json.dumps({"driver": list(driver), "processes": processes}))
    return path


def test_reap_kills_a_dead_drivers_processes_whose_start_time_matches(spawn) -> None:
    a, b, reused = spawn("sleep", "60"), spawn("sleep", "60"), spawn("sleep", "60")
    driver = dead_driver(spawn)
    listed = [(p.pid, orphans.start_time(p.pid)) for p in (a, b)]
    # `reused` stands for a pid the record lists that now belongs to a newer process.
    path = write_record(driver, [*listed, (reused.pid, orphans.start_time(reused.pid) - 1)])
    assert orphans.reap() == {driver[0]: sorted([a.pid, b.pid])}
    assert a.wait(timeout=5) == -9 and b.wait(timeout=5) == -9
    assert reused.poll() is None
    assert not path.exists()
    assert orphans.reap() == {}  # the record is gone: nothing is ended twice


def test_records_of_live_drivers_are_left_alone(spawn) -> None:
    driver, worker = spawn("sleep", "60"), spawn("sleep", "60")
    listed = [(worker.pid, orphans.start_time(worker.pid))]
    path = write_record((driver.pid, orphans.start_time(driver.pid)), listed)
    assert orphans.reap() == {}
    assert worker.poll() is None and path.exists()


def test_a_reused_driver_pid_counts_as_dead(spawn) -> None:
    """The driver's pid runs again, started later: a different process, so its driver died."""
    other, worker = spawn("sleep", "60"), spawn("sleep", "60")
    path = write_record(
        (other.pid, orphans.start_time(other.pid) - 1),
        [(worker.pid, orphans.start_time(worker.pid))],
    )
    assert orphans.reap() == {other.pid: [worker.pid]}
    assert worker.wait(timeout=5) == -9 and other.poll() is None and not path.exists()


def test_a_dead_driver_whose_processes_all_ended_leaves_no_record_and_no_message(spawn) -> None:
    gone = dead_driver(spawn)
    path = write_record(dead_driver(spawn), [gone])
    assert orphans.reap() == {} and not path.exists()


def test_record_lists_the_processes_and_their_descendants_and_forget_deletes_it(spawn) -> None:
    parent = spawn("sh", "-c", "sleep 60 & echo forked; wait")
    assert parent.stdout.readline() == "forked\n"
    child = orphans.descendants([parent.pid])[1]
    orphans.record([parent.pid])
    path = orphans.records_dir() / f"{os.getpid()}.json"
    data = json.loads(path.read_text())
    assert data["driver"] == [os.getpid(), orphans.start_time(os.getpid())]
    assert data["processes"] == [[p, orphans.start_time(p)] for p in (parent.pid, child)]
    assert orphans.reap() == {} and path.exists()  # this driver is alive
    orphans.forget()
    assert not path.exists()
    assert parent.poll() is None


def test_refresh_adds_the_processes_started_since_the_record(spawn) -> None:
    """Ray starts a trial's worker after `ray.init`: a refresh at trial start records it too."""
    parent = spawn("sh", "-c", "read go; sleep 60 & echo forked; wait")
    orphans.record([parent.pid])
    path = orphans.records_dir() / f"{os.getpid()}.json"
    assert [p for p, _ in json.loads(path.read_text())["processes"]] == [parent.pid]
    parent.stdin.write("go\n")
    parent.stdin.flush()
    assert parent.stdout.readline() == "forked\n"
    child = orphans.descendants([parent.pid])[1]
    orphans.refresh()
    assert [p for p, _ in json.loads(path.read_text())["processes"]] == [parent.pid, child]
    orphans.forget()
    orphans.refresh()  # after forget: no record of its own, nothing written
    assert not path.exists()
    os.kill(child, signal.SIGKILL)


def test_describe_is_one_line_naming_the_processes_and_the_drivers() -> None:
    assert orphans.describe({99: [123, 456]}) == (
        "ended 2 Ray processes (pids 123, 456) left by an earlier run whose driver (pid 99) "
        "was killed"
    )
    assert orphans.describe({7: [8], 9: [10]}) == (
        "ended 2 Ray processes (pids 8, 10) left by earlier runs whose drivers (pids 7, 9) "
        "were killed"
    )
    assert orphans.describe({7: [8]}) == (
        "ended 1 Ray process (pid 8) left by an earlier run whose driver (pid 7) was killed"
    )


def test_off_linux_nothing_is_recorded_or_reaped(spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    worker = spawn("sleep", "60")
    path = write_record(dead_driver(spawn), [(worker.pid, orphans.start_time(worker.pid))])
    monkeypatch.setattr(orphans, "SUPPORTED", False)
    orphans.record([worker.pid])
    assert orphans.reap() == {}
    assert worker.poll() is None and path.exists()
    assert not (orphans.records_dir() / f"{os.getpid()}.json").exists()
