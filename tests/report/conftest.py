"""Fixtures for report tests: a study database built through the storage code, and a real
headless Chromium driven over the DevTools protocol (pipe transport, no extra packages)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult
from robustbench_opt.storage import Store

EVIL = '<script>alert("x")</script><img src="https://evil.example/x.png">'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _result(config: TrialConfig, acc: float, diverged: bool = False) -> TrialResult:
    epochs = [
        EpochRecord(e, 2.0 / e, acc - 0.1 / e, 2.2 / e, acc - 0.12 / e, config.lr, 0.5)
        for e in range(1, 3)
    ]
    return TrialResult(
        status="diverged" if diverged else "completed",
        epochs=epochs,
        final_test_acc=epochs[-1].test_acc,
        best_test_acc=epochs[-1].test_acc,
        best_epoch=2,
        test_acc_at_best_val=None,
        best_val_epoch=None,
        diverged_reason="loss exploded" if diverged else None,
        optimizer_kwargs={},
        weight_decay_mode="decoupled",
        n_params=10,
        device="cpu",
        versions={},
        wall_seconds=1.5,
        config=config.to_dict(),
    )


def build_run_study(
    store: Store, name: str, optimizers: tuple[str, ...], seeds: int, finished: bool = False
) -> None:
    """A 2 lr x 2 wd grid per optimizer: one diverged trial, one failed, one running and one left
    pending (unless `finished`: then every trial has a result, one diverged); all others finished
    with per-epoch metrics (written as the runner writes them)."""
    configs = [
        TrialConfig("synthetic", "mlp", "adamw", lr, wd, seed=seed, label=label)
        for label in optimizers
        for lr in (0.1, 0.01)
        for wd in (0.0, 0.01)
        for seed in range(seeds)
    ]
    store.register_study(name, {"name": name}, f"hash-{name}", configs)
    run_id = store.start_run(name)
    ids = [c.cell_id(name) for c in configs]
    claimed = len(ids) if finished else len(ids) - 1  # else the last cell stays pending
    store.claim(name, run_id, ids[:claimed])
    for k, (config, cell_id) in enumerate(zip(configs[:claimed], ids[:claimed], strict=True)):
        if k == 1 and not finished:
            store.record_failure(name, cell_id, "RuntimeError: boom")
        elif k == 2 and not finished:
            store.record_start(name, cell_id)  # stays running
        else:
            acc = 0.5 + 0.3 * (k % 5) / 5 + 0.02 * config.seed
            result = _result(config, acc, diverged=k == 3)
            for epoch in result.epochs:
                store.record_epoch(name, cell_id, epoch)
            store.record_result(name, cell_id, result)


@pytest.fixture(scope="session")
def report_db(tmp_path_factory) -> str:
    """Database URL holding study "demo" (adam, sgd), one named EVIL with an EVIL optimizer, both
    unfinished, and a finished study "done" (momentum, adam, sgd)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('reportdb') / 'r.db'}"
    store = Store(url)
    build_run_study(store, "demo", ("adam", "sgd"), seeds=2)
    build_run_study(store, EVIL, (EVIL,), seeds=1)
    build_run_study(store, "done", ("momentum", "adam", "sgd"), seeds=1, finished=True)
    return url


@pytest.fixture(scope="session")
def finished_db(tmp_path_factory) -> str:
    """Database URL holding only the finished study "done"."""
    url = f"sqlite:///{tmp_path_factory.mktemp('finisheddb') / 'f.db'}"
    build_run_study(Store(url), "done", ("momentum", "adam", "sgd"), seeds=1, finished=True)
    return url


@pytest.fixture
def evil() -> str:
    """A study/optimizer name that would run script and load a remote image if not escaped."""
    return EVIL


@pytest.fixture
def chromium() -> str:
    """Path of Chromium; tests skip without it unless ROBUSTBENCH_TEST_STRICT=1."""
    if CHROMIUM is None:
        if os.environ.get("ROBUSTBENCH_TEST_STRICT") == "1":
            pytest.fail("chromium not found and ROBUSTBENCH_TEST_STRICT=1")
        pytest.skip("chromium not installed")
    return CHROMIUM


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class DevTools:
    """Minimal Chrome DevTools Protocol client over --remote-debugging-pipe (fds 3 and 4)."""

    FLAGS = (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--remote-debugging-pipe",
    )  # fmt: skip

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # above fd 4, so that placing them at 3 and 4 in the child cannot clobber one another
        to_browser_r, from_browser_w = (_high_fd(to_browser_r), _high_fd(from_browser_w))

        def as_fds_3_and_4() -> None:
            os.dup2(to_browser_r, 3)
            os.dup2(from_browser_w, 4)

        self.proc = subprocess.Popen(
            [executable, *self.FLAGS, f"--user-data-dir={profile}"],
            preexec_fn=as_fds_3_and_4,  # noqa: PLW1509 (single-threaded setup, fds only)
            close_fds=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:  # fmt: skip
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for k, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(k)
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError("no reply from chromium")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)


@pytest.fixture
def devtools(chromium, tmp_path):
    browser = DevTools(chromium, tmp_path / "profile")
    yield browser
    browser.close()
