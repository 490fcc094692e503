"""The runner on a real local Ray runtime (one per session), in process, and, where marked,
the same behaviour from the local executor's worker processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path

import optuna
import pytest
import ray
from optuna.trial import TrialState

from robustbench_opt.errors import UserError
from robustbench_opt.runner import connect
from robustbench_opt.runner import make_plan as _make_plan
from robustbench_opt.runner.connect import preflight
from robustbench_opt.runner.execute import run_plan
from robustbench_opt.runner.feed import LOST_RETRIES
from robustbench_opt.runner.worker import trial_resources
from robustbench_opt.spec import load_study
from robustbench_opt.storage import Store

pytestmark = pytest.mark.usefixtures("ray_local")
LOSS_RTOL, ACC_ATOL = 2e-3, 0.01  # tests/trial/test_pack.py's whole-trial tolerances
# How a lost worker's error line starts, per executor
LOST = {"ray": "ActorDiedError: ", "local": "worker process "}
both_executors = pytest.mark.parametrize("executor", ["ray", "local"])


def make_plan(store: Store, spec, study: str):  # noqa: ANN001, ANN201
    """The plan for the session's Ray (its CPUs, not this machine's)."""
    return _make_plan(store, spec, study, cpus=lambda: ray.cluster_resources()["CPU"])


def complete_per_cell(store: Store, study: str) -> Counter:
    trials = optuna.load_study(study_name=study, storage=store.optuna_storage).trials
    return Counter(t.user_attrs["cell_id"] for t in trials if t.state == TrialState.COMPLETE)


def trials_per_cell(store: Store, study: str) -> dict[str, list[TrialState]]:
    trials = optuna.load_study(study_name=study, storage=store.optuna_storage).trials
    found: dict[str, list[TrialState]] = {}
    for t in trials:
        found.setdefault(t.user_attrs["cell_id"], []).append(t.state)
    return found


def logged(log: Path, event: str) -> list:
    """FakeTrial's log: the `cell` of every line of `event`, in order."""
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    return [x["cell"] for x in lines if x["event"] == event]


def key(config) -> list:  # noqa: ANN001
    """A cell as FakeTrial logs it."""
    return [config.optimizer_label, config.lr, config.weight_decay, config.seed]


@both_executors
def test_every_cell_lands_once(tmp_path: Path, make_study, fake_trial, executor: str) -> None:
    spec = load_study(make_study("four", [0.1, 0.01], resources={"executor": executor}))
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    plan = make_plan(store, spec, "four")
    with open(tmp_path / "p", "w") as progress:
        outcome = run_plan(store, spec, plan, trial_fn=fake_trial(), progress=progress)
    ids = [c.cell_id("four") for c in spec.cells()]
    assert sorted(outcome.claimed) == sorted(ids) and outcome.failed == {}
    assert complete_per_cell(store, "four") == Counter(ids)
    frame = store.cells_frame("four").set_index("cell_id")
    assert set(frame["state"]) == {"done"}
    # FakeTrial: acc = 0.5 + 0.1 * epoch - lr, two epochs
    expected = {c.cell_id("four"): round(0.7 - c.lr, 6) for c in spec.cells()}
    assert frame["final_test_acc"].to_dict() == expected
    assert Counter(store.epochs_frame("four")["cell_id"]) == Counter({i: 2 for i in ids})
    finished = _make_plan(store, spec, "four", cpus=lambda: 1 / 0)  # nothing to run: not asked
    assert finished.to_run == [] and finished.tasks == [] and finished.cost.seconds == 0
    [trial, *_] = optuna.load_study(study_name="four", storage=store.optuna_storage).trials
    pid = int(re.split("[@<]", trial.user_attrs["record"]["device"])[1])
    assert pid != os.getpid()  # trained in a worker process
    progress = (tmp_path / "p").read_text()
    assert "4/4 done" in progress and "2/2 trials started" in progress  # packs of adam, sgd
    assert outcome.tasks == 2


def test_the_run_hands_tune_exactly_the_plans_tasks(tmp_path: Path, make_study, fake_trial):
    """Packs of at most 2 over 2 optimizers x 3 lrs: each pack as planned is one Ray trial."""
    spec = load_study(make_study("tasks", [0.1, 0.01, 0.001], resources={"cpus": 1, "packing": 2}))
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    plan = make_plan(store, spec, "tasks")
    assert sorted(map(len, plan.tasks)) == [1, 1, 2, 2]
    log = tmp_path / "log"
    outcome = run_plan(store, spec, plan, trial_fn=fake_trial(log=str(log)))
    planned = [[key(plan.configs[cell]) for cell in task] for task in plan.tasks]
    ran = logged(log, "task")
    assert sorted(ran) == sorted(planned) and outcome.tasks == len(plan.tasks)


@both_executors
def test_cells_lost_with_their_worker_are_retried_in_the_run(
    storage_url: str, tmp_path: Path, make_study, fake_trial, executor: str
) -> None:
    """A pack of 3 whose worker process dies in its second cell: the first cell stays done and
    is never trained again; the two unfinished cells are recorded as a failed attempt and
    trained again in the same run, so the run ends with every cell done exactly once."""
    lrs = [0.1, 0.01, 0.001]
    spec = load_study(
        make_study(
            "lost",
            lrs,
            optimizers=["adam"],
            resources={"cpus": 1, "packing": 3, "executor": executor},
        )  # fmt: skip
    )
    store = Store(storage_url)
    log, died = tmp_path / "log", tmp_path / "died"
    fake = fake_trial(log=str(log), die_lr=0.01, died=str(died))
    outcome = run_plan(store, spec, make_plan(store, spec, "lost"), trial_fn=fake)
    ids = {c.lr: c.cell_id("lost") for c in spec.cells()}
    assert died.exists() and outcome.failed == {} and outcome.released == []
    assert set(outcome.retried) == {ids[0.01], ids[0.001]}
    assert all(e.startswith(LOST[executor]) for e in outcome.retried.values()), outcome.retried
    assert sorted(outcome.claimed) == sorted(ids.values()) and outcome.tasks == 2
    assert set(store.cells_frame("lost")["state"]) == {"done"}
    done, fail = TrialState.COMPLETE, TrialState.FAIL
    assert trials_per_cell(store, "lost") == {
        ids[0.1]: [done],
        ids[0.01]: [fail, done],
        ids[0.001]: [fail, done],
    }
    cells = {c.lr: key(c) for c in spec.cells()}
    assert logged(log, "task") == [[cells[lr] for lr in lrs], [cells[0.01], cells[0.001]]]
    assert Counter(map(tuple, logged(log, "start"))) == {
        tuple(cells[0.1]): 1,
        tuple(cells[0.01]): 2,
        tuple(cells[0.001]): 1,
    }
    assert make_plan(store, spec, "lost").to_run == []


@both_executors
def test_a_cell_that_keeps_losing_its_worker_is_retried_a_bounded_number_of_times(
    tmp_path: Path, make_study, fake_trial, executor: str
) -> None:
    resources = {"executor": executor}
    spec = load_study(make_study("doomed", [0.1], optimizers=["adam"], resources=resources))
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    log = tmp_path / "log"
    outcome = run_plan(
        store, spec, make_plan(store, spec, "doomed"), trial_fn=fake_trial(log=str(log), die_lr=0.1)
    )
    [cell] = [c.cell_id("doomed") for c in spec.cells()]
    assert list(outcome.failed) == [cell] and outcome.failed[cell].startswith(LOST[executor])
    assert len(logged(log, "start")) == 1 + LOST_RETRIES and outcome.tasks == 1 + LOST_RETRIES
    assert trials_per_cell(store, "doomed") == {cell: [TrialState.FAIL] * (1 + LOST_RETRIES)}
    assert store.cells_frame("doomed")["state"].tolist() == ["failed"]  # the next run retries


@both_executors
def test_failed_cell_is_recorded_then_retried_alone(
    storage_url: str, tmp_path: Path, make_study, fake_trial, executor: str
) -> None:
    """A cell whose training raises is recorded failed and not retried in its run (it would
    raise again); the next run retries it."""
    spec = load_study(make_study("flaky", [0.1, 0.5], resources={"executor": executor}))
    store = Store(storage_url)
    bad = {c.cell_id("flaky") for c in spec.cells() if c.lr == 0.5}
    log = tmp_path / "log"
    outcome = run_plan(
        store, spec, make_plan(store, spec, "flaky"), trial_fn=fake_trial(fail_lr=0.5, log=str(log))
    )
    assert set(outcome.failed) == bad and outcome.retried == {}
    assert list(outcome.failed.values()) == ["ValueError: boom at lr=0.5"] * 2
    assert sorted(cell[1] for cell in logged(log, "start")) == [0.1, 0.1, 0.5, 0.5]  # once each
    frame = store.cells_frame("flaky").set_index("cell_id")
    assert frame.loc[sorted(bad), "state"].tolist() == ["failed", "failed"]
    assert (frame.drop(index=sorted(bad))["state"] == "done").all()

    plan = make_plan(store, spec, "flaky")
    assert {c.cell_id("flaky") for c in plan.to_run} == bad
    outcome = run_plan(store, spec, plan, trial_fn=fake_trial())
    assert set(outcome.claimed) == bad and outcome.failed == {}
    assert complete_per_cell(store, "flaky") == Counter(frame.index)
    trials = optuna.load_study(study_name="flaky", storage=store.optuna_storage).trials
    assert Counter(t.state for t in trials) == {TrialState.COMPLETE: 4, TrialState.FAIL: 2}


def test_real_training_on_digits(tmp_path: Path, make_study) -> None:
    path = make_study("real", [0.01], optimizers=["adam"], recipe={"epochs": 1})
    spec = load_study(path)
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    outcome = run_plan(store, spec, make_plan(store, spec, "real"))
    assert outcome.failed == {} and len(outcome.claimed) == 1
    row = store.cells_frame("real").iloc[0]
    assert row["state"] == "done" and 0.5 < row["final_test_acc"] <= 1.0
    [trial] = optuna.load_study(study_name="real", storage=store.optuna_storage).trials
    record = trial.user_attrs["record"]
    assert record["weight_decay_mode"] and "torch" in record["versions"]
    assert trial.intermediate_values == {1: row["final_test_acc"]}


def test_a_pack_of_3_through_ray_records_each_cell_as_its_single_cell_trial_would(
    tmp_path: Path, make_study, float64_engine
):
    """Three adam cells as one packed Ray trial (the trial engine, fused path) against the
    same cells trained one per trial: each cell lands once, says it ran packed, and every
    epoch record measures the same within the whole-trial tolerances of tests/trial/test_pack.py.
    Both run the real engine in float64 (`float64_engine`), so that holds on any CPU."""
    frames, epochs, notes = {}, {}, {}
    for packing in ("off", 3):
        path = make_study("pk", [0.01, 0.003, 0.001], optimizers=["adam"],
                          recipe={"epochs": 2, "batch_size": 64},
                          resources={"cpus": 1, "gpus": 0, "packing": packing})  # fmt: skip
        spec = load_study(path)
        store = Store(f"sqlite:///{tmp_path / f'{packing}.db'}")
        outcome = run_plan(store, spec, make_plan(store, spec, "pk"), trial_fn=float64_engine)
        assert outcome.failed == {} and outcome.tasks == (3 if packing == "off" else 1)
        assert complete_per_cell(store, "pk") == Counter(outcome.claimed)
        frames[packing] = store.cells_frame("pk").set_index("cell_id").sort_index()
        epochs[packing] = store.epochs_frame("pk").set_index(["cell_id", "epoch"]).sort_index()
        trials = optuna.load_study(study_name="pk", storage=store.optuna_storage).trials
        notes[packing] = [" ".join(t.user_attrs["record"]["notes"]) for t in trials]
    assert all("packed: trained in one process with 3 cells" in n for n in notes[3])
    assert not any("packed" in n for n in notes["off"])
    off, packed = frames["off"], frames[3]
    assert list(off.index) == list(packed.index) and (packed["state"] == "done").all()
    assert (off["final_test_acc"] - packed["final_test_acc"]).abs().max() <= ACC_ATOL
    assert list(epochs["off"].index) == list(epochs[3].index) and len(epochs[3]) == 6
    for column in ("train_loss", "test_loss"):
        a, b = epochs[3][column], epochs["off"][column]
        assert ((a - b).abs() <= LOSS_RTOL * b.abs()).all(), column
    for column in ("train_acc", "test_acc"):
        assert (epochs[3][column] - epochs["off"][column]).abs().max() <= ACC_ATOL, column


def test_gpu_request_without_gpu_is_refused_before_any_write(tmp_path: Path, make_study) -> None:
    db = tmp_path / "r.db"
    store = Store(f"sqlite:///{db}")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    spec = load_study(make_study("gpu", [0.1], resources={"cpus": 1, "gpus": 0.5}))
    with pytest.raises(UserError, match="no GPU"):
        run_plan(store, spec, make_plan(store, spec, "gpu"))
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_auto_gpu_on_a_cpu_cluster_trains_on_cpu(make_study) -> None:
    spec = load_study(make_study("auto", [0.1], resources={"cpus": 1, "gpus": "auto"}))
    assert trial_resources(spec, {}) == {"cpu": 1.0, "gpu": 0.0}


def test_preflight_checks_the_data_on_every_node(tmp_path: Path, make_study) -> None:
    preflight(load_study(make_study("here", [0.1])))  # digits: nothing to miss
    far = load_study(
        make_study("far", [0.1], dataset="cifar10", model="resnet20", data_dir=str(tmp_path))
    )
    with pytest.raises(UserError) as err:
        preflight(far)
    assert str(err.value).startswith("Ray node ")
    assert f"no CIFAR-10 files in '{tmp_path}'" in str(err.value)


def test_preflight_names_a_node_where_the_package_does_not_import(
    make_study, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker side fails the way a node without the package would (an import error)."""
    monkeypatch.setattr(connect, "check_node", lambda *args: __import__("no_such_pkg_rbo"))
    with pytest.raises(UserError) as err:
        preflight(load_study(make_study("bare", [0.1])))
    message = str(err.value)
    assert message.startswith("Ray node ") and "\n" not in message
    assert "does not run there" in message and "No module named 'no_such_pkg_rbo'" in message
    assert message.endswith("install this package on every node (pip install -e .)")
