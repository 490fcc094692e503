"""`run` as a subprocess: a separately started Ray node, concurrent runs, a killed driver.

The tests of exactly-once cells (two launchers, a killed driver) run on SQLite and PostgreSQL.

The node runs with RAY_AUTH_MODE=disabled (Ray 2.60 token auth off; a real cluster would pass
RAY_AUTH_MODE=token and the token to `run`). It is stopped by PID, not `ray stop`, which would
end every Ray process on the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from robustbench_opt.storage import Store
from robustbench_opt.storage.leases import pid_alive

RAY = str(Path(sys.executable).with_name("ray"))
ENV = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "ROBUSTBENCH_STORAGE")} | {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports: all sockets stay bound until every port is known."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port() -> int:
    return free_ports(1)[0]


def session(sid: int) -> list[int]:
    """Live PIDs in session `sid`: everything a process started with start_new_session=True
    spawned, including Ray daemons that re-parented themselves and rewrote their command line
    (zombies, ended but not yet reaped, do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def settled_session(sid: int, timeout: float = 20) -> set[int]:
    """Session `sid`'s live PIDs once they stop changing for 2 s (dying processes are gone)."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        now = set(session(sid))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 2:
            break
        time.sleep(0.2)
    return last


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def ray_node() -> str:
    """A Ray head node started with `ray start`; yields its address."""
    temp = tempfile.mkdtemp(prefix="rbo-ray-")
    flags = (
        "--port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
        "--node-manager-port",
        "--object-manager-port",
    )
    ports = dict(zip(flags, map(str, free_ports(len(flags))), strict=True))
    port = ports.pop("--port")
    cmd = [RAY, "start", "--head", f"--port={port}", f"--temp-dir={temp}", "--num-cpus=2"]
    cmd += ["--include-dashboard=false", "--disable-usage-stats"]
    cmd += [f"{flag}={value}" for flag, value in ports.items()]
    starter = subprocess.Popen(cmd, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        assert starter.wait(timeout=120) == 0
        yield f"127.0.0.1:{port}"
    finally:
        kill_all(session(starter.pid))
        shutil.rmtree(temp, ignore_errors=True)


def drive(driver: Path, fake: dict, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(driver), json.dumps(fake), "run", *args],
        env=env or ENV,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def optuna_trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    with Store(url) as store:
        return optuna.load_study(study_name=study, storage=store.optuna_storage).trials


def events(log: Path, event: str) -> Counter:
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    return Counter(tuple(x["cell"]) for x in lines if x["event"] == event)


def wait_for_a_recorded_cell(proc: subprocess.Popen, url: str, study: str) -> None:
    """Waits until the driver has written at least one finished cell to the database."""
    deadline = time.monotonic() + 150
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        if Store.exists(url):
            with Store(url, create=False) as store:  # one poll: its connections closed at once
                if store.has_study(study) and "done" in set(store.cells_frame(study)["state"]):
                    return
        time.sleep(0.2)


def assert_every_cell_finished_once(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    """Every cell of `study` is done, with exactly one complete Optuna trial and none left
    running; returns the study's trials."""
    frame = Store(url).cells_frame(study)
    assert set(frame["state"]) == {"done"}
    trials = optuna_trials(url, study)
    complete = Counter(t.user_attrs["cell_id"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == Counter(frame["cell_id"])  # every cell exactly once
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    return trials


def assert_recorded_cells_trained_once(log: Path, url: str, study: str, recorded: set) -> None:
    """Cells the database held as finished before an interruption were never trained again."""
    keys = {
        t.user_attrs["cell_id"]: tuple(
            t.params[k] for k in ("optimizer", "lr", "weight_decay", "seed")
        )
        for t in optuna_trials(url, study)
        if t.state == TrialState.COMPLETE
    }
    starts = events(log, "start")
    assert recorded and all(starts[keys[cid]] == 1 for cid in recorded), (recorded, starts)
    assert set(events(log, "done")) == set(keys.values())  # every cell trained to the end


def test_unreachable_address_is_one_line(tmp_path: Path, make_study) -> None:
    path = make_study("far", [0.1])
    url = f"sqlite:///{tmp_path / 'r.db'}"
    Store(url)
    before = (tmp_path / "r.db").read_bytes()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "robustbench_opt",
            "run",
            str(path),
            "--storage",
            url,
            "--address",
            f"127.0.0.1:{free_port()}",
        ],  # fmt: skip
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot reach the Ray cluster at '127.0.0.1:")
    assert proc.stderr.count("\n") == 1
    assert (tmp_path / "r.db").read_bytes() == before


def test_missing_data_on_a_cluster_node_fails_before_anything_is_written(
    ray_node: str, tmp_path: Path, make_study
) -> None:
    """On a cluster the driver does not check its own disk: a preflight task on every node
    checks the data (and that the package imports there) before the study is registered."""
    missing = tmp_path / "no-cifar"
    path = make_study("far_data", [0.1], dataset="cifar10", model="resnet20", data_dir=str(missing))
    db = tmp_path / "r.db"
    Store(f"sqlite:///{db}")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        before = list(conn.iterdump())
    proc = subprocess.run(
        [sys.executable, "-m", "robustbench_opt", "run", str(path), "--storage", f"sqlite:///{db}",
         "--address", ray_node],
        env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: Ray node ")
    assert f"no CIFAR-10 files in '{missing}'" in proc.stderr
    assert proc.stderr.rstrip().endswith("(command line: --data-dir)")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert list(conn.iterdump()) == before


def test_run_joins_a_separately_started_node(
    ray_node: str, driver_script: Path, tmp_path: Path, make_study
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    path = make_study("remote", [0.1, 0.01])
    code, out, err = finish(
        drive(driver_script, {}, str(path), "--storage", url, "--address", ray_node)
    )
    assert code == 0, err
    trials = optuna_trials(url, "remote")
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    port = ray_node.rsplit(":", 1)[1]  # the GCS reports the node IP, not 127.0.0.1
    assert {t.user_attrs["record"]["device"].rsplit(":", 1)[1] for t in trials} == {port}


def test_concurrent_runs_never_train_a_cell_twice(
    ray_node: str, driver_script: Path, tmp_path: Path, make_study, storage_url: str
) -> None:
    """Two launchers on one study share its cells: both train, no cell twice. Trials wait at a
    gate until each launcher holds a claim, so neither can take the study before the other
    starts (a condition built, not hoped for from start-up timing)."""
    url = storage_url
    path = make_study("pair", [0.1, 0.03, 0.01, 0.003])
    log, gate = tmp_path / "log", tmp_path / "gate"
    fake = {"epoch_seconds": 0.2, "log": str(log), "gate": str(gate)}
    args = [str(path), "--storage", url, "--address", ray_node, "--max-concurrent", "1"]
    args += ["--packing", "2"]  # 4 trials of 2 cells (auto: one trial per optimizer's 4 cells)
    procs = [drive(driver_script, fake, *args) for _ in range(2)]
    try:
        deadline = time.monotonic() + 150
        while True:  # one claimed trial per launcher (--max-concurrent 1), blocked at the gate
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
            if Store.exists(url):
                with Store(url, create=False) as store:
                    if store.has_study("pair") and len(set(store.claims("pair").values())) == 2:
                        break
            time.sleep(0.2)
    finally:
        gate.touch()
    results = [finish(p) for p in procs]
    assert [r[0] for r in results] == [0, 0], results
    trained = [int(re.search(r"^trained (\d+) cells in ", out, re.M)[1]) for _, out, _ in results]
    assert min(trained) >= 1 and sum(trained) == 8, trained  # both launchers trained
    starts = events(log, "start")
    assert len(starts) == 8 and set(starts.values()) == {1}
    per_cell = Counter(t.user_attrs["cell_id"] for t in optuna_trials(url, "pair"))
    assert len(per_cell) == 8 and set(per_cell.values()) == {1}


def test_the_dry_run_prints_the_trials_that_the_run_hands_to_tune(
    driver_script: Path, tmp_path: Path, make_study
) -> None:
    """`run --dry-run` and `run` on a local Ray print the same trials line (count, pack sizes,
    slots: the local Ray is started with the CPUs the plan was sized for), and the run's trials
    are exactly those: FakeTrial logs each task it is handed."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    path = make_study("same", [0.1, 0.03, 0.01, 0.003, 0.001])  # 10 cells, packing auto
    log = tmp_path / "log"
    args = [str(path), "--storage", url]
    code, dry, err = finish(drive(driver_script, {}, *args, "--dry-run"))
    assert code == 0, err
    code, out, err = finish(drive(driver_script, {"log": str(log)}, *args))
    assert code == 0, err
    [printed] = re.findall(r"^trials: .*$", dry, re.MULTILINE)
    assert re.findall(r"^trials: .*$", out, re.MULTILINE) == [printed]
    count, shape = re.match(
        r"trials: (\d+) \(packing auto: up to \d+ cells per trial, (.*) cells, for", printed
    ).groups()
    tasks = [
        x["cell"] for x in map(json.loads, log.read_text().splitlines()) if x["event"] == "task"
    ]
    sizes = Counter(map(len, tasks))
    assert int(count) == len(tasks) and shape == " + ".join(
        f"{n} x {k}" for k, n in sorted(sizes.items(), reverse=True)
    )
    assert sum(sizes.elements()) == 10 and f"{len(tasks)}/{len(tasks)} trials started" in err


def test_killed_driver_then_rerun_trains_each_cell_once(
    driver_script: Path, tmp_path: Path, make_study, storage_url: str
) -> None:
    """A driver with its own local Ray (no --address) is SIGKILLed mid-study. Ray processes it
    leaves (Ray 2.60: DashboardAgent and RuntimeEnvAgent, which ignore SIGTERM) are ended by
    the next local `run`, which says so in one line; every cell is recorded exactly once."""
    url = storage_url
    path = make_study("killed", [0.1, 0.01])
    log = tmp_path / "log"
    fake = {"epoch_seconds": 1.0, "log": str(log)}
    # Its own records directory (TMPDIR), so no other run on this machine is reaped or named;
    # Ray's own files stay in /tmp/ray (RAY_TMPDIR: its socket paths must stay short).
    records = tempfile.mkdtemp(prefix="rbo-rec-")
    env = ENV | {"TMPDIR": records, "RAY_TMPDIR": "/tmp"}
    args = [str(path), "--storage", url, "--max-concurrent", "1"]
    proc = drive(driver_script, fake, *args, env=env)
    try:
        wait_for_a_recorded_cell(proc, url, "killed")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        leftovers = settled_session(proc.pid)  # what outlives the driver and its raylet
        agents = {pid for pid in leftovers if "Agent" in command_line(pid)}  # ray::...Agent
        store = Store(url)
        before = store.cells_frame("killed")
        assert "running" in set(before["state"])
        # Cells recorded finished before the kill; a cell whose worker finished but whose
        # result the driver had not yet written is unfinished in the database and rightly
        # trained again.
        recorded = set(before.loc[before["state"] == "done", "cell_id"])

        code, out, err = finish(drive(driver_script, fake, *args, env=env))
        assert code == 0, err
        ended = re.findall(
            rf"^ended \d+ Ray process(?:es)? \(pids? ([\d, ]+)\) left by an earlier run "
            rf"whose driver \(pid {proc.pid}\) was killed$",
            err,
            re.MULTILINE,
        )
        # It ended only processes of the killed session, and said so once. Ray's agents never
        # exit by themselves, so when they were left the message must name them; a worker may
        # still exit on its own before the rerun (then it is not named).
        named = {int(pid) for pid in ended[0].split(", ")} if ended else set()
        assert len(ended) <= 1 and named <= leftovers, (err, leftovers)
        assert agents <= named, (err, agents)
        if not leftovers:
            assert "Ray process" not in err
        assert settled_session(proc.pid, timeout=10) == set()
        assert_every_cell_finished_once(url, "killed")
        assert_recorded_cells_trained_once(log, url, "killed", recorded)
        # The killed driver's record was reaped, the rerun's deleted as it ended normally.
        assert not os.listdir(Path(records) / f"robustbench-opt-ray-{os.getuid()}")
    finally:
        kill_all(session(proc.pid))
        shutil.rmtree(records, ignore_errors=True)


@pytest.mark.parametrize(
    ("signum", "name"),
    [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")],
    ids=["int", "term"],
)
def test_ctrl_c_or_sigterm_keeps_finished_cells_and_a_rerun_completes(
    ray_node: str, driver_script: Path, tmp_path: Path, make_study, signum: int, name: str
) -> None:
    """Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) or SIGTERM (what
    Slurm's scancel sends) stops the run cleanly: finished cells stay, every cell in flight is
    released, and a rerun finishes."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    path = make_study("interrupted", [0.1, 0.01])
    log = tmp_path / "log"
    fake = {"epoch_seconds": 1.0, "log": str(log)}
    args = [str(path), "--storage", url, "--address", ray_node, "--max-concurrent", "1"]
    proc = drive(driver_script, fake, *args)
    wait_for_a_recorded_cell(proc, url, "interrupted")
    os.killpg(proc.pid, signum)
    code, out, err = finish(proc)
    assert code != 0 and "Traceback" not in err
    summary = re.search(r"trained (\d+) cells in", out)  # what it really finished
    stopped = re.search(
        rf"stopped early by {name}: (\d+) claimed cells did not finish and were released", err
    )
    frame = Store(url).cells_frame("interrupted")
    assert "running" not in set(frame["state"]) and "done" in set(frame["state"])
    recorded = set(frame.loc[frame["state"] == "done", "cell_id"])
    # It counts only the finished cells, and names the released ones apart.
    assert summary and int(summary.group(1)) == len(recorded), (out, err)
    released = frame["error"].eq("run interrupted before this cell finished").sum()
    assert stopped and int(stopped.group(1)) == released, err
    assert "run interrupted before this cell finished" not in err  # not listed as failed

    code, _, err = finish(drive(driver_script, fake, *args))
    assert code == 0, err
    assert_every_cell_finished_once(url, "interrupted")
    assert_recorded_cells_trained_once(log, url, "interrupted", recorded)


@pytest.mark.parametrize(
    ("signum", "name"),
    [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM"), (signal.SIGKILL, None)],
    ids=["int", "term", "kill"],
)
def test_a_local_run_stopped_by_ctrl_c_sigterm_or_kill_9_loses_and_repeats_nothing(
    driver_script: Path, tmp_path: Path, make_study, signum: int, name: str | None
) -> None:
    """The local executor (worker processes forked from the driver, no Ray): Ctrl-C or SIGTERM
    releases the cells in flight and keeps the finished ones; kill -9 leaves its claims to a
    dead run, which the rerun frees, and its workers die with it. Either way the rerun finishes
    every cell exactly once and trains no finished cell again."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    path = make_study("inproc", [0.1, 0.01], resources={"executor": "local"})
    log = tmp_path / "log"
    fake = {"epoch_seconds": 1.0, "log": str(log)}
    args = [str(path), "--storage", url]
    proc = drive(driver_script, fake, *args)
    wait_for_a_recorded_cell(proc, url, "inproc")
    os.killpg(proc.pid, signum)
    code, out, err = finish(proc)
    assert code != 0 and "Traceback" not in err
    assert "executor local: resources.executor (2 worker processes of 1 thread" in out
    frame = Store(url).cells_frame("inproc")
    recorded = set(frame.loc[frame["state"] == "done", "cell_id"])
    if name is not None:
        assert "running" not in set(frame["state"]), frame
        assert f"stopped early by {name}" in err
    assert len(recorded) < len(frame)  # stopped before the end

    rerun = drive(driver_script, fake, *args)
    code, out, err = finish(rerun)
    assert code == 0, err
    trials = assert_every_cell_finished_once(url, "inproc")
    assert_recorded_cells_trained_once(log, url, "inproc", recorded)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    trainers = [t.user_attrs["record"]["device"].split("<") for t in done]
    assert {parent for _, parent in trainers} <= {str(proc.pid), str(rerun.pid)}  # their workers
    assert not any(pid_alive(int(child.removeprefix("fake@"))) for child, _ in trainers)
