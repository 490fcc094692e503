"""Who trains a run's trials: the plan's executor choice, and the in-process executor against
Ray, record for record."""

from __future__ import annotations

import optuna
import pytest

from robustbench_opt.errors import UserError
from robustbench_opt.runner.calibrate import Calibration
from robustbench_opt.runner.execute import run_plan
from robustbench_opt.runner.plan import duration, make_plan
from robustbench_opt.spec import load_study
from robustbench_opt.storage import Store

# What a record says of where and how fast it ran, not of what it measured
MACHINE_KEYS = {"device", "wall_seconds"}


def _measured(epoch: dict) -> dict:
    return {k: v for k, v in epoch.items() if k != "seconds"}


def anew() -> Calibration:
    """A calibration that times every figure (the injected timer's), none from the cache."""
    return Calibration(recalibrate=True)


def _auto(make_study, lrs, **extra):  # noqa: ANN001, ANN202
    return load_study(make_study("ex", lrs, resources={"cpus": 1, "executor": "auto"}, **extra))


def test_auto_trains_in_process_when_the_training_is_shorter_than_rays_fixed_cost(make_study):
    """10 ms per image: 4 digits cells x 2 epochs take ~2 min one after another, against Ray's
    8 s plus half of it on 2 workers; 1 us per image: 0.01 s, in-process."""
    spec = _auto(make_study, [0.1, 0.01])
    slow = make_plan(
        None, spec, "ex", cpus=lambda: 2.0, timer=lambda c, s, k: 1e-2, calibration=anew()
    )
    assert slow.executor == "ray" and slow.slots == 2
    alone, on_ray = duration(slow.cost.seconds), duration(8 + slow.cost.seconds / 2)
    assert slow.executor_note == (
        f"executor ray: about {alone} of training in this process against {on_ray} on Ray "
        "(8s to start it and a worker, then 2 trials at once)"
    )
    fast = make_plan(
        None, spec, "ex", cpus=lambda: 2.0, timer=lambda c, s, k: 1e-6, calibration=anew()
    )
    assert fast.executor == "in-process" and fast.slots == 1
    assert "against 8s on Ray" in fast.executor_note
    # sized for one slot: each optimizer's 2 cells in one pack (on 2 slots: one pack each too,
    # as it keeps both busy); the cost is of these tasks
    assert sorted(map(len, fast.tasks)) == [2, 2] and fast.cost.seconds < 0.1


def test_in_process_uses_the_fastest_measured_thread_count(make_study) -> None:
    spec = load_study(make_study("ex", [0.1], resources={"cpus": "auto", "executor": "auto"}))
    rates = {1: 2e-6, 2: 1e-6}  # two threads twice as fast
    plan = make_plan(
        None, spec, "ex", cpus=lambda: 2.0, timer=lambda c, s, k: 2e-6,
        thread_timer=lambda config, threads: rates[threads],
    )  # fmt: skip
    assert plan.executor == "in-process" and plan.trial_cpus == 2.0


def test_a_cluster_run_and_a_pinned_executor_skip_the_choice(make_study) -> None:
    def timer(config, steps, cells):  # noqa: ANN001, ANN202
        raise AssertionError("no calibration is needed to choose")

    spec = _auto(make_study, [0.1])
    on_cluster = make_plan(None, spec, "ex", cpus=lambda: 4.0, timer=timer, local=False)
    assert on_cluster.executor == "ray"
    assert on_cluster.executor_note == "executor ray: the run joins a Ray cluster"
    pinned = load_study(make_study("ex", [0.1], resources={"executor": "in-process"}))
    plan = make_plan(None, pinned, "ex", cpus=lambda: 4.0, timer=timer)
    assert plan.executor == "in-process" and plan.slots == 1
    with pytest.raises(UserError, match="resources.executor is in-process, but the run joins"):
        make_plan(None, pinned, "ex", cpus=lambda: 4.0, timer=timer, local=False)


def test_an_unknown_executor_is_one_line_naming_the_choices(make_study) -> None:
    with pytest.raises(UserError, match=r"expected one of auto, ray, in-process, got 'inproc'"):
        load_study(make_study("ex", [0.1], resources={"executor": "inproc"}))


@pytest.mark.usefixtures("ray_local")
def test_in_process_and_ray_give_equal_records(tmp_path, make_study, float64_engine) -> None:
    """The same study (a pack of two adam cells and one of two sgd cells, the real engine in
    float64 on one thread), trained by Ray workers and by the driver itself: every cell's
    epochs and result are equal, value for value; only where and how fast it ran differ."""
    records = {}
    for executor in ("ray", "in-process"):
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
        records[executor] = (cells, epochs, results)
    (cells_r, epochs_r, results_r), (cells_i, epochs_i, results_i) = records.values()
    assert cells_r.equals(cells_i) and epochs_r.equals(epochs_i)
    assert results_r == results_i and len(results_r) == 4
