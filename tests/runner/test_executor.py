"""Who trains a run's trials: the plan's executor choice, and local worker processes against
Ray, record for record."""

from __future__ import annotations

import optuna
import pytest

from robustbench_opt.errors import UserError
from robustbench_opt.runner import plan as plan_module
from robustbench_opt.runner.execute import run_plan
from robustbench_opt.runner.plan import make_plan
from robustbench_opt.spec import load_study
from robustbench_opt.storage import Store

# What a record says of where and how fast it ran, not of what it measured
MACHINE_KEYS = {"device", "wall_seconds"}


def _measured(epoch: dict) -> dict:
    return {k: v for k, v in epoch.items() if k != "seconds"}


def _auto(make_study, lrs, **resources):  # noqa: ANN001, ANN202
    resources = {"cpus": 1, "executor": "auto"} | resources
    return load_study(make_study("ex", lrs, resources=resources))


def test_auto_trains_cpu_trials_on_this_machine_in_local_workers(make_study) -> None:
    """No calibration is needed to choose; as many workers as slots, fewer with fewer tasks."""

    def timer(config, steps, cells):  # noqa: ANN001, ANN202
        raise AssertionError("the choice times nothing")

    spec = _auto(make_study, [0.1, 0.01], packing="off")  # 4 one-cell tasks
    plan = make_plan(None, spec, "ex", cpus=lambda: 2.0, timer=timer)
    assert plan.executor == "local" and plan.slots == 2 and plan.workers == 2
    assert plan.executor_note == (
        "executor local: CPU trials on this machine, no Ray to start "
        "(2 worker processes of 1 thread forked by this one)"
    )
    one = make_plan(None, _auto(make_study, [0.1]), "ex", cpus=lambda: 4.0, timer=timer)
    assert [len(task) for task in one.tasks] == [1, 1] and one.workers == 2
    two = _auto(make_study, [0.1], cpus=2)
    plan = make_plan(None, two, "ex", cpus=lambda: 2.0, timer=timer)
    assert plan.workers == 1 and "(1 worker process of 2 threads forked" in plan.executor_note


def test_auto_trains_on_ray_on_a_cluster_and_on_gpus(make_study, monkeypatch) -> None:
    on_cluster = make_plan(None, _auto(make_study, [0.1]), "ex", cpus=lambda: 4.0, local=False)
    assert on_cluster.executor == "ray"
    assert on_cluster.executor_note == "executor ray: the run joins a Ray cluster"
    asks = make_plan(None, _auto(make_study, [0.1], gpus=0.5), "ex", cpus=lambda: 4.0)
    assert asks.executor_note == "executor ray: trials train on GPUs, which Ray schedules"
    monkeypatch.setattr(plan_module, "device_kind", lambda config: "cuda")  # a GPU here
    here = make_plan(None, _auto(make_study, [0.1], gpus="auto"), "ex", cpus=lambda: 4.0)
    assert here.executor == "ray"


def test_a_pinned_executor_is_used_and_local_refuses_a_cluster(make_study) -> None:
    for executor in ("ray", "local"):
        pinned = load_study(make_study("ex", [0.1], resources={"executor": executor}))
        plan = make_plan(None, pinned, "ex", cpus=lambda: 4.0)
        assert plan.executor == executor
        assert plan.executor_note.startswith(f"executor {executor}: resources.executor")
    with pytest.raises(UserError, match="resources.executor is local, but the run joins"):
        make_plan(None, pinned, "ex", cpus=lambda: 4.0, local=False)


def test_an_unknown_executor_is_one_line_naming_the_choices(make_study) -> None:
    with pytest.raises(UserError, match=r"expected one of auto, local, ray, got 'in-process'"):
        load_study(make_study("ex", [0.1], resources={"executor": "in-process"}))


@pytest.mark.usefixtures("ray_local")
def test_local_workers_and_ray_give_equal_records(tmp_path, make_study, float64_engine) -> None:
    """The same study (a pack of two adam cells and one of two sgd cells, the real engine in
    float64 on one thread), trained by Ray workers (each imports and builds anew) and by
    worker processes forked from the driver (warm: torch and the engine already imported):
    every cell's epochs and result are equal, value for value; only where and how fast it ran
    differ."""
    records = {}
    for executor in ("ray", "local"):
        spec = load_study(
            make_study("eq", [0.1, 0.01], resources={"cpus": 1, "packing": 2, "executor": executor})
        )
        store = Store(f"sqlite:///{tmp_path / f'{executor}.db'}")
        plan = make_plan(store, spec, "eq", cpus=lambda: 2.0)
        assert plan.executor == executor and sorted(map(len, plan.tasks)) == [2, 2]
        outcome = run_plan(store, spec, plan, trial_fn=float64_engine)
        assert outcome.failed == {} and outcome.finished == 4
        cells = store.cells_frame("eq").drop(columns=["seconds"])
        epochs = store.epochs_frame("eq").drop(columns=["seconds"])
        results = {}
        for t in optuna.load_study(study_name="eq", storage=store.optuna_storage).trials:
            record = {k: v for k, v in t.user_attrs["record"].items() if k not in MACHINE_KEYS}
            record["epochs"] = [_measured(e) for e in record["epochs"]]
            results[t.user_attrs["cell_id"]] = record
            assert record["runtime"]["trials_at_once"] == 2  # the plan's workers, recorded
        records[executor] = (cells, epochs, results)
    (cells_r, epochs_r, results_r), (cells_l, epochs_l, results_l) = records.values()
    assert cells_r.equals(cells_l) and epochs_r.equals(epochs_l)
    assert results_r == results_l and len(results_r) == 4
