"""The cost estimate of a plan: from this study's recorded epochs, else a short calibration."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest

from robustbench_opt.config import Recipe, TrialConfig
from robustbench_opt.datasets import REGISTRY
from robustbench_opt.runner import calibrate
from robustbench_opt.runner import plan as plan_module
from robustbench_opt.runner.calibrate import (
    CALIBRATION_STEPS,
    choose_threads,
    local_cpus,
    thread_counts,
    time_training_images,
)
from robustbench_opt.runner.calibrate import pack_speedup as real_pack_speedup
from robustbench_opt.runner.plan import cell_seconds, estimate_cost, make_plan
from robustbench_opt.spec import load_study
from robustbench_opt.trial.device import pick_device


def _plan(make_study, **extra: object):  # noqa: ANN202
    spec = load_study(make_study("est", [0.1, 0.01], **extra))
    return make_plan(None, spec, "est")


def test_calibrated_cost_scales_the_timed_image_cost_to_every_cell(make_study) -> None:
    """digits: 1438 training and 359 test images; val_fraction 0.1 holds out floor(143.8)."""
    plan = _plan(
        make_study,
        optimizers=["adam", {"name": "sam", "kwargs": {"base": "adam"}}],
        val_fraction=0.1,
        recipe={"epochs": 3, "batch_size": 64},
    )
    asked: list[tuple[str, int, int]] = []

    def timer(config, steps, cells):  # noqa: ANN001, ANN202
        asked.append((config.optimizer, steps, cells))
        return 1e-3  # seconds per trained image

    cost = estimate_cost(plan, [[c] for c in plan.to_run], timer)
    assert asked == [("adam", CALIBRATION_STEPS, 1)]  # one calibration, of the first cell
    one_pass = 3 * (1295 + (359 + 143) / 3) * 1e-3
    two_pass = 3 * (2 * 1295 + (359 + 143) / 3) * 1e-3  # SAM: two forward-backward passes
    assert math.isclose(cost.seconds, 2 * one_pass + 2 * two_pass, rel_tol=1e-12)
    assert cost.basis.startswith(
        "12 epochs in 4 trials; calibrated by timing training steps of simple_cnn"
    )


def test_packed_trials_are_costed_at_the_packed_rate(make_study) -> None:
    """Packs of 3 and a single cell: the pack rate is timed at the largest pack, once."""
    spec = load_study(make_study("est", [0.1, 0.01, 0.001, 0.0001, 0.2, 0.3, 0.4]))
    plan = make_plan(None, spec, "est")  # 7 lrs x 1 wd x 1 seed, one optimizer
    cells = plan.to_run
    tasks = [cells[0:3], cells[3:6], cells[6:7]]
    asked: list[int] = []

    def timer(config, steps, k):  # noqa: ANN001, ANN202
        asked.append(k)
        return {1: 1e-3, 3: 4e-4}[k]  # a packed cell costs 0.4 of one alone

    cost = estimate_cost(plan, tasks, timer)
    assert asked == [1, 3]
    per_image = (1438 + 359 / 3) * spec.recipe.epochs
    assert math.isclose(cost.seconds, per_image * (6 * 4e-4 + 1e-3), rel_tol=1e-12)
    assert "0.4 ms per image and cell in packs of 3" in cost.basis


def test_sam_at_equal_compute_counts_its_halved_epochs(make_study) -> None:
    plan = _plan(
        make_study,
        optimizers=[{"name": "sam", "kwargs": {"base": "adam"}}],
        recipe={"epochs": 4, "batch_size": 64, "sam_equal_compute": True},
    )
    [cell, *_] = plan.to_run
    assert cell_seconds(cell, 1.0) == 2 * (2 * 1438 + 359 / 3)


def test_cell_time_reads_the_data_set_sizes_from_the_registry(make_study, monkeypatch) -> None:
    """An entry of 1000 training and 300 test images: per epoch 1000 trained plus 300 / 3."""
    entry = dataclasses.replace(REGISTRY["digits"], train_size=1000, test_size=300)
    monkeypatch.setitem(REGISTRY, "digits_small", entry)
    [cell, *_] = _plan(make_study, recipe={"epochs": 2, "batch_size": 64}).to_run
    small = dataclasses.replace(cell, dataset="digits_small")
    assert math.isclose(cell_seconds(small, 1.0), 2 * (1000 + 300 / 3), rel_tol=1e-12)
    assert math.isclose(cell_seconds(cell, 1.0), 2 * (1438 + 359 / 3), rel_tol=1e-12)


def test_measured_epochs_of_the_study_win_over_calibration(make_study) -> None:
    plan = dataclasses.replace(_plan(make_study), measured_epoch_seconds=0.25)
    tasks = [plan.to_run[:3], plan.to_run[3:]]  # a pack of 3 cells, a single cell
    cost = estimate_cost(plan, tasks, timer=lambda config, steps, cells: 1 / 0)  # never called
    assert cost.seconds == 4 * 0.25  # 2 trials x 2 epochs: a pack's epoch is one trial epoch
    assert cost.basis == "2 trials, 4 trial epochs x 0.25 s/epoch, measured in this study"


def test_nothing_to_run_costs_nothing(make_study) -> None:
    plan = dataclasses.replace(_plan(make_study), to_run=[])
    assert estimate_cost(plan, [], timer=lambda config, steps, cells: 1 / 0).seconds == 0.0


def test_calibration_times_real_training_steps() -> None:
    """Seconds per trained image and cell, of real steps: one step of the reported time fits
    in the call's own wall time, and a model of ~100x the compute per image (resnet20 on 32 x
    32 x 3 images against simple_cnn on 8 x 8 x 1) costs over 10x as much per image."""
    small = TrialConfig(
        "digits", "simple_cnn", "adam", 1e-3, 0.0, Recipe(batch_size=16), device="cpu"
    )
    large = dataclasses.replace(small, dataset="cifar10", model="resnet20")
    rates = {}
    for config, cells in ((small, 1), (small, 3), (large, 1)):  # alone, a pack of 3, larger
        start = time.perf_counter()
        rates[config.model, cells] = time_training_images(config, 2, cells)
        wall = time.perf_counter() - start
        step = rates[config.model, cells] * config.recipe.batch_size * cells  # adam: one pass
        assert 0 < step <= wall, (config.model, cells, step, wall)
    assert rates["resnet20", 1] > 10 * rates["simple_cnn", 1], rates


def test_the_plans_packs_are_sized_for_its_slots(make_study) -> None:
    """8 cells of 2 optimizers, packing auto: as many trials as slots when there are enough
    cells (slots from the CPUs at resources.cpus each, or the cap on trials at once)."""
    spec = load_study(make_study("slots", [0.1, 0.01, 0.001, 0.0001]))
    sizes = lambda plan: [len(task) for task in plan.tasks]  # noqa: E731
    four = make_plan(None, spec, "slots", cpus=lambda: 4)
    assert four.slots == 4 and sizes(four) == [2, 2, 2, 2] and four.max_concurrent is None
    capped = make_plan(None, spec, "slots", cpus=lambda: 4, max_concurrent=1)
    assert capped.slots == 1 and sizes(capped) == [4, 4] and capped.max_concurrent == 1
    two_cpus_each = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, cpus=2))
    assert make_plan(None, two_cpus_each, "slots", cpus=lambda: 4).slots == 2
    assert sorted(c for task in four.tasks for c in task) == sorted(four.configs)
    timed = make_plan(None, spec, "slots", cpus=lambda: 4, timer=lambda config, steps, k: 1e-3)
    assert timed.cost.basis.startswith("16 epochs in 4 trials; calibrated")


def test_local_cpus_is_the_affinity_capped_by_a_cgroup_quota(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(calibrate.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(calibrate, "CPU_QUOTA", tmp_path / "cpu.max")
    assert local_cpus() == 8  # no cgroup file
    for text, cpus in (("max 100000", 8), ("400000 100000", 4), ("150000 100000", 1)):
        (tmp_path / "cpu.max").write_text(text + "\n")
        assert local_cpus() == cpus, text
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU: still one slot
    assert local_cpus() == 1


@pytest.mark.parametrize("cpus", [0.5, 1])
def test_too_few_cpus_still_plan_one_slot(make_study, cpus) -> None:
    spec = load_study(make_study("one", [0.1]))
    assert make_plan(None, spec, "one", cpus=lambda: cpus).slots == 1


def test_choose_threads_finishes_the_cells_soonest() -> None:
    """rounds of trials x seconds per image: one cell on 2 CPUs takes both threads when they
    are faster; many cells run one thread each unless 2 threads more than halve the time."""
    assert choose_threads({1: 1.0, 2: 0.6}, cells=1, cpus=2) == 2  # 1 round either way
    assert choose_threads({1: 1.0, 2: 0.6}, cells=18, cpus=2) == 1  # 9 rounds x 1 < 18 x 0.6
    assert choose_threads({1: 1.0, 2: 0.4}, cells=18, cpus=2) == 2  # 18 x 0.4 < 9 x 1
    assert choose_threads({1: 1.0, 2: 1.0}, cells=1, cpus=2) == 1  # a tie: fewer threads
    assert thread_counts(1) == [1] and thread_counts(6) == [1, 2, 4]


def test_cpus_auto_takes_the_threads_per_trial_from_the_timer(make_study) -> None:
    """`resources.cpus: auto`: the plan times 1, 2, 4 threads (injected), picks the split of
    the CPUs that finishes soonest, sizes its slots for it and says how it chose."""
    spec = load_study(make_study("auto", [0.1]))
    auto = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, cpus="auto"))
    asked: list[int] = []

    def timer(config: TrialConfig, threads: int) -> float:
        asked.append(threads)
        return {1: 1e-3, 2: 0.4e-3, 4: 0.3e-3}[threads]

    plan = make_plan(None, auto, "auto", cpus=lambda: 4, thread_timer=timer)
    # 2 cells: 4 threads -> 2 rounds x 0.3; 2 threads -> 1 round x 0.4; 1 -> 1 x 1.0
    assert asked == [1, 2, 4] and plan.trial_cpus == 2.0 and plan.slots == 2
    assert plan.threads_basis == (
        "1 thread 1 ms per image, 2 threads 0.4 ms per image, 4 threads 0.3 ms per image, timed now"
    )
    fixed = make_plan(None, spec, "auto", cpus=lambda: 4, thread_timer=timer)
    assert fixed.trial_cpus == 1.0 and fixed.threads_basis == "" and len(asked) == 3


def _rates(alone: float, packed: float, asked: list[int]):  # noqa: ANN202
    """A calibration timer: seconds per image and cell alone and in any pack."""

    def timer(config, steps, cells):  # noqa: ANN001, ANN202
        asked.append(cells)
        return alone if cells == 1 else packed

    return timer


@pytest.mark.parametrize(
    ("packed", "sizes", "note"),
    [
        (1e-3 / 0.9, [1] * 8, "packing off: a pack of 4 measured 0.9x on "),
        (
            1e-3 / 2.5,
            [4, 4],
            "packing on: packs of up to 4 finish soonest, 2 trials on 1 slot; "
            "a pack of 4 measured 2.5x on ",
        ),
    ],
    ids=["does_not_pay", "pays"],
)
def test_packing_auto_packs_only_where_the_probe_measures_that_a_pack_pays(
    make_study, monkeypatch, packed, sizes, note
) -> None:
    monkeypatch.setattr(plan_module, "pack_speedup", real_pack_speedup)  # not the suite's stub
    spec = load_study(make_study("auto", [0.1, 0.01, 0.001, 0.0001]))
    asked: list[int] = []
    plan = make_plan(None, spec, "auto", cpus=lambda: 1, timer=_rates(1e-3, packed, asked))
    assert [len(task) for task in plan.tasks] == sizes  # 2 optimizers x 4 cells, 1 slot
    assert plan.packing_note == note + pick_device(None).type + ", timed now"  # here
    assert sorted(c for task in plan.tasks for c in task) == sorted(plan.configs)
    plan.cost  # noqa: B018 - the cost estimate reuses the probe's timings
    assert sorted(asked) == [1, 4]


def test_packing_auto_trains_one_cell_per_trial_when_every_cell_has_a_slot(
    make_study, monkeypatch
) -> None:
    """Packs that pay, but 8 slots for 8 cells: one round of single cells ends soonest."""
    monkeypatch.setattr(plan_module, "pack_speedup", real_pack_speedup)
    spec = load_study(make_study("wide", [0.1, 0.01, 0.001, 0.0001]))
    plan = make_plan(None, spec, "wide", cpus=lambda: 8, timer=_rates(1e-3, 1e-3 / 2.5, []))
    assert [len(task) for task in plan.tasks] == [1] * 8
    assert plan.packing_note == (
        "packing off: one cell per trial finishes soonest, 8 trials on 8 slots; "
        f"a pack of 4 measured 2.5x on {pick_device(None).type}, timed now"
    )


def test_fixed_packing_is_not_probed(make_study, monkeypatch) -> None:
    monkeypatch.setattr(plan_module, "pack_speedup", real_pack_speedup)
    spec = load_study(make_study("fixed", [0.1, 0.01, 0.001, 0.0001]))
    fixed = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, packing=4))
    plan = make_plan(None, fixed, "fixed", cpus=lambda: 1, timer=lambda *_: 1 / 0)
    assert [len(task) for task in plan.tasks] == [4, 4] and plan.packing_note is None
