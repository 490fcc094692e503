"""Shared fixtures: a real throwaway PostgreSQL server and a `storage_url` over both backends.

Without PostgreSQL binaries the PostgreSQL cases skip, except when ROBUSTBENCH_TEST_STRICT=1
(CI), where they fail.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

STRICT = os.environ.get("ROBUSTBENCH_TEST_STRICT") == "1"


def missing(reason: str) -> None:
    """Skips a test whose system dependency is absent, or fails it in strict (CI) mode."""
    if STRICT:
        pytest.fail(f"{reason} (ROBUSTBENCH_TEST_STRICT=1)")
    pytest.skip(reason)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _PostgresServer:
    """initdb + pg_ctl in a temporary directory, run as `postgres` when we are root."""

    def __init__(self, root: Path) -> None:
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"
            pw = pwd.getpwnam(self.user)
            os.chown(root, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        log = str(self.root / "log")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", log, "-o", opts, "-w", "start")

    def stop(self) -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: tiny models on a shared 2-core machine train ~10x faster this way."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def float64() -> Iterator[None]:
    """Whole trials in float64 (models and batches take torch's default dtype), for tests that
    compare two ways of computing one training trajectory: in float32 two reduction orders
    drift apart over many steps by amounts that depend on the CPU's kernels (a 1-ulp change
    can break a max-pool tie and move the trajectory); in float64 they agree to ~1e-15, on
    every machine."""
    import torch

    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture(autouse=True)
def packs_pay(monkeypatch: pytest.MonkeyPatch) -> None:
    """`packing: auto` plans as if every pack paid: its probe times real training steps, which
    would make the plans of tests depend on the machine's load (tests of the probe itself
    put the real one back)."""
    from robustbench_opt.runner import plan

    monkeypatch.setattr(plan, "pack_speedup", lambda config, cells, timer: 2.0)


@pytest.fixture(autouse=True)
def calibration_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fresh, empty calibration cache per test ($ROBUSTBENCH_CACHE, which subprocesses
    inherit): no test reads or writes the user's, and no test sees another's figures."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ROBUSTBENCH_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[_PostgresServer | None]:
    """A running PostgreSQL server for the session, or None when it cannot be had."""
    if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
        yield None
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        yield None
        return
    # Not under pytest's tmp dir: its parents are private to root, and postgres must reach it.
    root = Path(tempfile.mkdtemp(prefix="rbo-pg-"))
    server = _PostgresServer(root)
    try:
        server.start()
        yield server
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


_db_counter = iter(range(1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty results database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    postgres_server = request.getfixturevalue("postgres_server")
    if postgres_server is None:
        missing("PostgreSQL server binaries (initdb, pg_ctl) or psycopg not available")
    return postgres_server.create_database(f"rbo_test_{next(_db_counter)}")


# ---------------------------------------------------------------------- Ray and a fake trainer


@dataclass
class FakeTrial:
    """Stands in for the trial engine (`trial.train_cells`) where a test is about orchestration,
    not training: it trains a task's cells one after another.

    Sleeps `epoch_seconds` per epoch, reports every epoch, raises for `fail_lr`, and appends
    one JSON line per event to `log` so tests can count trainings per cell: "task" (the task's
    cells, as it starts), "start" and "done" per cell. With `gate` (a path) set, a cell starts
    training only once that file exists. A cell at `die_lr` kills its own worker process
    (SIGKILL, as a lost node would end it) while the file `died` does not exist, creating it:
    so it dies the first time and trains when tried again (every time without `died`).
    """

    epoch_seconds: float = 0.0
    fail_lr: float | None = None
    log: str | None = None
    gate: str | None = None
    die_lr: float | None = None
    died: str | None = None

    def __call__(self, configs, on_epoch, on_result):  # trial.train_cells' signature
        self.note("task", [self.key(config) for config in configs])
        for k, config in enumerate(configs):
            on_result(k, self.one(config, lambda record, k=k: on_epoch(k, record)))

    @staticmethod
    def key(config) -> list:
        return [config.optimizer_label, config.lr, config.weight_decay, config.seed]

    def note(self, event: str, cell: list) -> None:
        import json

        if self.log:
            with open(self.log, "a") as f:
                f.write(json.dumps({"event": event, "cell": cell}) + "\n")

    @staticmethod
    def where() -> str:
        """`fake@PID` of the process that trains, then `<PPID` in a local worker (its parent,
        the driver) or `@GCS` in a Ray worker (its Ray's address)."""
        import multiprocessing
        import os
        import sys

        if multiprocessing.parent_process() is not None:  # forked by the local executor
            return f"fake@{os.getpid()}<{os.getppid()}"
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            return f"fake@{os.getpid()}@{ray.get_runtime_context().gcs_address}"
        return f"fake@{os.getpid()}"

    def one(self, config, on_epoch):  # (TrialConfig, callable) -> TrialResult
        import os
        import signal
        import time

        from robustbench_opt.config import EpochRecord, TrialResult

        while self.gate and not os.path.exists(self.gate):
            time.sleep(0.05)
        self.note("start", self.key(config))
        if config.lr == self.fail_lr:
            raise ValueError(f"boom at lr={config.lr:g}")
        if config.lr == self.die_lr and not (self.died and os.path.exists(self.died)):
            if self.died:
                open(self.died, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        epochs = []
        for epoch in range(1, config.recipe.epochs + 1):
            time.sleep(self.epoch_seconds)
            acc = round(0.5 + 0.1 * epoch - config.lr, 6)
            record = EpochRecord(epoch, 1.0 / epoch, acc, 2.0 / epoch, acc, config.lr, 0.01)
            on_epoch(record)
            epochs.append(record)
        self.note("done", self.key(config))
        return TrialResult(
            status="completed",
            epochs=epochs,
            final_test_acc=epochs[-1].test_acc,
            best_test_acc=epochs[-1].test_acc,
            best_epoch=len(epochs),
            test_acc_at_best_val=None,
            best_val_epoch=None,
            diverged_reason=None,
            optimizer_kwargs={"lr": config.lr},
            weight_decay_mode="l2",
            n_params=0,
            device=self.where(),
            versions={},
            wall_seconds=self.epoch_seconds * len(epochs),
            config=config.to_dict(),
        )


def _float64_engine(configs, on_epoch, on_result):  # trial.train_cells' signature
    """The real trial engine with whole trials in float64 (see the `float64` fixture), for
    runner tests that compare packed and unpacked cells through Ray: set in the worker."""
    import torch

    from robustbench_opt.trial.engine import train_cells

    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        train_cells(configs, on_epoch, on_result)
    finally:
        torch.set_default_dtype(dtype)


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """One local Ray for the in-process runner tests (the runner reuses an initialised Ray)."""
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import conftest
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def write_study(path: Path, name: str, lrs: list[float], **extra: object) -> Path:
    """A small digits study file: adam and sgd over `lrs`, wd 0, `extra` top-level keys;
    trained on Ray (`resources.executor: ray`) unless `extra` says otherwise."""
    import yaml

    resources = {"cpus": 1, "gpus": 0, "executor": "ray"} | dict(extra.pop("resources", {}))
    data = {
        "name": name,
        "dataset": "digits",
        "model": "simple_cnn",
        "recipe": {"epochs": 2, "batch_size": 64},
        "optimizers": ["adam", "sgd"],
        "lrs": lrs,
        "weight_decays": [0.0],
        **extra,
        "resources": resources,
    }
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def make_study(tmp_path: Path):
    """`make_study(name, lrs, **extra) -> Path` of a small study file in tmp_path."""
    return lambda name, lrs, **extra: write_study(tmp_path / f"{name}.yaml", name, lrs, **extra)


@pytest.fixture(scope="session")
def fake_trial() -> type[FakeTrial]:
    return FakeTrial


@pytest.fixture(scope="session")
def float64_engine():
    """The real trial engine in float64, as a runner's `trial_fn` (`_float64_engine`)."""
    return _float64_engine


DRIVER = """
import dataclasses, json, sys
from dataclasses import dataclass
from unittest import mock

{source}

import robustbench_opt.runner.local as local
import robustbench_opt.runner.plan as plan
import robustbench_opt.runner.worker as worker
from robustbench_opt.cli import main

fake = FakeTrial(**json.loads(sys.argv[1]))
# as the `packs_pay` fixture: a plan must not hang on the machine's load (a dry run and the run
# are two processes and would each time a pack)
with mock.patch.object(worker, "default_trial_fn", fake), mock.patch.object(
    local, "default_trial_fn", fake
), mock.patch.object(plan, "pack_speedup", lambda config, cells, timer: 2.0):
    sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="session")
def driver_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python DRIVER FAKE_JSON CLI_ARGS...`: the real CLI with FakeTrial(**FAKE_JSON) trainer."""
    import inspect

    path = tmp_path_factory.mktemp("driver") / "driver.py"
    path.write_text(DRIVER.format(source=inspect.getsource(FakeTrial)))
    return path


@pytest.fixture(scope="session")
def study_writer():
    """`write_study(path, name, lrs, **extra)` for fixtures wider than a test."""
    return write_study
