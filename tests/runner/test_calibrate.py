"""This machine's calibration cache: a figure the plan timed is stored and read back instead
of timed, only under the same key; a corrupt file is timed anew; --recalibrate times anew."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from robustbench_opt.runner import calibrate
from robustbench_opt.runner import plan as plan_module
from robustbench_opt.runner.calibrate import CACHE_FILE, Calibration, cache_dir, pack_speedup
from robustbench_opt.runner.plan import make_plan
from robustbench_opt.spec import StudySpec, load_study
from robustbench_opt.storage import Store

CACHED = "from this machine's calibration cache, measured "


def never(*args: object) -> float:
    raise AssertionError(f"timed although the figure is cached: {args}")


class Timers:
    """Injected timers that count their calls: 1 ms per image alone, 0.4 ms per image and
    cell in a pack, and 1 ms / 0.4 ms per image on 1 / 2 threads."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []  # (batch size, cells)
        self.threads: list[tuple[int, int]] = []  # (batch size, threads)

    def step(self, config, steps: int, cells: int) -> float:  # noqa: ANN001
        self.steps.append((config.recipe.batch_size, cells))
        return 1e-3 if cells == 1 else 0.4e-3

    def thread(self, config, threads: int) -> float:  # noqa: ANN001
        self.threads.append((config.recipe.batch_size, threads))
        return {1: 1e-3, 2: 0.4e-3}[threads]


def auto_spec(make_study, **recipe: object) -> StudySpec:
    """Two adam cells, 1 epoch, `resources.cpus: auto` and `packing: auto`."""
    path = make_study("cal", [0.01, 0.001], optimizers=["adam"],
                      recipe={"epochs": 1, "batch_size": 64, **recipe},
                      resources={"cpus": "auto", "gpus": 0, "packing": "auto"})  # fmt: skip
    return load_study(path)


def plan_of(spec: StudySpec, study: str = "cal", store: Store | None = None, **timers):  # noqa: ANN003, ANN202
    return make_plan(store, spec, study, cpus=lambda: 2, **timers)


@pytest.fixture
def real_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pack probe times through the plan's timer (not the suite's `packs_pay` stub)."""
    monkeypatch.setattr(plan_module, "pack_speedup", pack_speedup)


def test_the_cache_lives_in_the_users_cache_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROBUSTBENCH_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("ROBUSTBENCH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "robustbench-opt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "robustbench-opt"


@pytest.mark.usefixtures("real_probe")
def test_a_second_plan_reads_every_figure_and_chooses_the_same(
    make_study, calibration_cache: Path
) -> None:
    spec = auto_spec(make_study)
    timers = Timers()
    first = plan_of(spec, timer=timers.step, thread_timer=timers.thread)
    first.cost  # noqa: B018 - the cost's figure is the probe's
    # 1 and 2 threads timed (1 thread alone is also the cost's and the probe's figure), a pack of 2
    assert sorted(timers.threads) == [(64, 1), (64, 2)] and timers.steps == [(64, 2)]
    assert first.trial_cpus == 2.0 and first.tasks and max(map(len, first.tasks)) == 2
    assert first.threads_basis.endswith("timed now") and first.packing_note.endswith("timed now")
    stored = json.loads((calibration_cache / CACHE_FILE).read_text())["figures"]
    assert len(stored) == 3
    for key in map(json.loads, stored):  # what a figure depends on; nothing of a cell's
        assert {"lr", "weight_decay", "seed", "study", "optimizer"}.isdisjoint(key)
        assert key["batch_size"] == 64 and key["model"] == "simple_cnn" and key["cells"] >= 1

    second = plan_of(spec, "other", timer=never, thread_timer=never)
    assert second.trial_cpus == first.trial_cpus and second.slots == first.slots
    assert [len(t) for t in second.tasks] == [len(t) for t in first.tasks]
    assert second.cost.seconds == first.cost.seconds
    for line in (second.threads_basis, second.packing_note, second.cost.basis):
        assert CACHED in line and "timed now" not in line, line
    assert first.threads_basis.split(", timed")[0] == second.threads_basis.split(", from")[0]


@pytest.mark.parametrize(
    ("change", "timed"),
    [
        ({"batch_size": 32}, {"threads": [(32, 1), (32, 2)], "steps": [(32, 2)]}),
        ({"channels_last": True}, {"threads": [(64, 1), (64, 2)], "steps": [(64, 2)]}),
        ({"epochs": 3}, {"threads": [], "steps": []}),  # not in the key: all figures read
    ],
    ids=["batch_size", "channels_last", "epochs"],
)
@pytest.mark.usefixtures("real_probe")
def test_a_figure_is_read_only_under_the_same_key(make_study, change, timed) -> None:
    plan_of(auto_spec(make_study), timer=Timers().step, thread_timer=Timers().thread)
    timers = Timers()
    plan_of(auto_spec(make_study, **change), timer=timers.step, thread_timer=timers.thread)
    assert sorted(timers.threads) == timed["threads"] and timers.steps == timed["steps"]


def test_more_threads_or_cells_or_another_machine_time_anew(
    make_study, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Figures stored for 1 and 2 threads, and one cell: 4 threads, a pack of 3, another host
    or another CPU count are timed."""
    config = auto_spec(make_study).cells()[0]
    calibration = Calibration()
    asked: list[str] = []
    calibration.figure(config, 1, 1, lambda: 1e-3)
    calibration.figure(config, 1, 2, lambda: 0.5e-3)
    fresh = Calibration()  # a new plan: reads the file
    assert fresh.figure(config, 1, 2, never) == 0.5e-3 and fresh.figure(config, 1, 1, never) == 1e-3
    assert fresh.figure(config, 1, 4, lambda: asked.append("4 threads") or 0.3e-3) == 0.3e-3
    assert fresh.figure(config, 3, 1, lambda: asked.append("pack of 3") or 0.2e-3) == 0.2e-3
    with monkeypatch.context() as patched:
        patched.setattr(calibrate.socket, "gethostname", lambda: "another-host")
        Calibration().figure(config, 1, 1, lambda: asked.append("host") or 2e-3)
    with monkeypatch.context() as patched:
        patched.setattr(calibrate, "local_cpus", lambda: 64)
        Calibration().figure(config, 1, 1, lambda: asked.append("cpus") or 3e-3)
    assert asked == ["4 threads", "pack of 3", "host", "cpus"]
    assert Calibration().figure(config, 1, 1, never) == 1e-3  # this machine's figure kept


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "\xff\xfe binary",
        "[1, 2]",
        '{"figures": [1]}',
        '{"figures": {"K": {"seconds": "fast", "measured": "2026-01-01T00:00:00+00:00"}}}',
        '{"figures": {"K": {"seconds": -1.0, "measured": "2026-01-01T00:00:00+00:00"}}}',
        '{"figures": {"K": {"seconds": 0.001, "measured": "yesterday"}}}',
        "",
    ],
)
def test_a_corrupt_cache_is_timed_anew_and_rewritten(
    make_study, calibration_cache: Path, text: str
) -> None:
    config = auto_spec(make_study).cells()[0]
    path = calibration_cache / CACHE_FILE
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    key = calibrate.figure_key(config, 1, 1)
    if text.startswith('{"figures": {"K"'):  # a bad entry under the real key
        path.write_text(text.replace('"K"', json.dumps(key)))
    asked: list[int] = []
    assert Calibration().figure(config, 1, 1, lambda: asked.append(1) or 1e-3) == 1e-3
    assert asked == [1]
    assert json.loads(path.read_text())["figures"][key]["seconds"] == 1e-3
    assert Calibration().figure(config, 1, 1, never) == 1e-3
    assert list(calibration_cache.iterdir()) == [path]  # no temporary file left


def test_an_unwritable_cache_times_every_plan_without_an_error(
    make_study, monkeypatch, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("ROBUSTBENCH_CACHE", str(tmp_path / "file" / "cache"))  # not a dir
    config = auto_spec(make_study).cells()[0]
    assert Calibration().figure(config, 1, 1, lambda: 1e-3) == 1e-3
    assert Calibration().figure(config, 1, 1, lambda: 2e-3) == 2e-3


@pytest.mark.usefixtures("real_probe")
def test_recalibrate_times_every_figure_anew_once_and_overwrites(
    make_study, calibration_cache: Path
) -> None:
    spec = auto_spec(make_study)
    plan_of(spec, timer=Timers().step, thread_timer=Timers().thread)
    before = json.loads((calibration_cache / CACHE_FILE).read_text())["figures"]
    timers = Timers()
    slower = lambda config, steps, cells: 2 * timers.step(config, steps, cells)  # noqa: E731
    again = plan_of(
        spec, timer=slower, thread_timer=timers.thread, calibration=Calibration(recalibrate=True)
    )
    again.cost  # noqa: B018
    assert sorted(timers.threads) == [(64, 1), (64, 2)] and timers.steps == [(64, 2)]
    assert again.threads_basis.endswith("timed now") and "timed now" in again.cost.basis
    after = json.loads((calibration_cache / CACHE_FILE).read_text())["figures"]
    assert after.keys() == before.keys()
    changed = [k for k in after if after[k]["seconds"] != before[k]["seconds"]]
    assert len(changed) == 1 and math.isclose(after[changed[0]]["seconds"], 0.8e-3)
    assert all(after[k]["measured"] >= before[k]["measured"] for k in after)


@pytest.mark.usefixtures("ray_local", "real_probe")
def test_calibration_reuse_never_changes_a_cells_identity_or_result(
    tmp_path: Path, make_study, float64_engine
) -> None:
    """The study planned and run with its figures timed (injected), then under another name in
    a fresh database with every figure read from the cache (a timer that raises): the same
    cells (configs and identities), trained in the same tasks, record the same results."""
    from robustbench_opt.runner.execute import run_plan

    spec = auto_spec(make_study)
    frames, epochs, plans = {}, {}, {}
    for study, timers in (("timed", Timers()), ("cached", None)):
        store = Store(f"sqlite:///{tmp_path / f'{study}.db'}")
        step, thread = (timers.step, timers.thread) if timers else (never, never)
        plan = plans[study] = plan_of(spec, study, store, timer=step, thread_timer=thread)
        outcome = run_plan(store, spec, plan, trial_fn=float64_engine)
        assert outcome.failed == {} and len(outcome.claimed) == 2
        same = {cid: c.cell_id("s") for cid, c in plan.configs.items()}  # minus the study's name
        cells, done = store.cells_frame(study), store.epochs_frame(study).drop(columns="seconds")
        cells["cell_id"], done["cell_id"] = cells["cell_id"].map(same), done["cell_id"].map(same)
        frames[study] = cells.set_index("cell_id").sort_index()
        epochs[study] = done.set_index(["cell_id", "epoch"]).sort_index()
    timed, cached = plans["timed"], plans["cached"]
    assert CACHED in cached.threads_basis and "timed now" in timed.threads_basis
    assert [c.to_dict() for c in cached.to_run] == [c.to_dict() for c in timed.to_run]
    assert [c.cell_id("s") for c in cached.to_run] == [c.cell_id("s") for c in timed.to_run]
    assert cached.trial_cpus == timed.trial_cpus == 2.0
    shape = lambda plan: [[plan.configs[c].to_dict() for c in t] for t in plan.tasks]  # noqa: E731
    assert shape(cached) == shape(timed) and len(timed.tasks) == 1  # one pack of 2
    assert set(frames["timed"]["state"]) == {"done"}
    assert frames["cached"].columns.equals(frames["timed"].columns)
    assert list(frames["cached"].index) == list(frames["timed"].index)
    assert list(epochs["cached"].index) == list(epochs["timed"].index)
    for column in ("state", "final_test_acc", "best_test_acc", "lr", "optimizer"):
        assert frames["cached"][column].tolist() == frames["timed"][column].tolist(), column
    for column in ("train_loss", "test_loss", "train_acc", "test_acc"):
        a, b = epochs["cached"][column], epochs["timed"][column]
        assert ((a - b).abs() <= 1e-12 * b.abs()).all(), column
