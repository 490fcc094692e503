"""How a run's cells become trials: packs of one optimizer entry and variant, sized by the
study's packing setting, and a feed that claims each trial's cells only when Tune asks."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import pytest

from robustbench_opt.config import Recipe, TrialConfig
from robustbench_opt.runner import tasks as tasks_module
from robustbench_opt.runner.execute import _CtrlC, _TaskFeed
from robustbench_opt.runner.tasks import AUTO_MAX_CELLS, make_tasks
from robustbench_opt.spec import Resources
from robustbench_opt.states import PENDING, RUNNING
from robustbench_opt.storage import Store


def grid(optimizers=("adam", "sgd"), lrs=(0.1, 0.01, 0.001), seeds=(0, 1)) -> dict:
    configs = [
        TrialConfig("digits", "simple_cnn", opt, lr, 0.0, Recipe(epochs=1), seed=seed)
        for opt in optimizers for lr in lrs for seed in seeds
    ]  # fmt: skip
    return {c.cell_id("s"): c for c in configs}


def test_packs_hold_one_optimizer_entry_and_split_evenly():
    configs = grid()  # 6 adam cells, then 6 sgd cells
    tasks = make_tasks(configs, Resources(packing=4), slots=1)
    assert [len(t) for t in tasks] == [3, 3, 3, 3]  # 6 -> two packs of 3, not 4 + 2
    for task in tasks:
        assert len({configs[c].optimizer for c in task}) == 1
    assert [c for t in tasks for c in t] == list(configs)  # every cell once, in plan order
    assert make_tasks(configs, Resources(packing="off"), slots=1) == [[c] for c in configs]


def test_cells_that_differ_in_more_than_lr_wd_seed_never_share_a_pack():
    configs = grid(optimizers=("adam",), lrs=(0.1,), seeds=(0,))
    other = next(iter(configs.values()))
    variant = dataclasses.replace(other, variant="cutmix", recipe=Recipe(epochs=1, cutmix_prob=1))
    configs[variant.cell_id("s")] = variant
    assert [len(t) for t in make_tasks(configs, Resources(packing=8), slots=1)] == [1, 1]


def test_auto_packs_keep_every_slot_busy_and_fit_memory(monkeypatch):
    configs = grid()
    monkeypatch.setattr(
        "robustbench_opt.runner.packing.cells_per_pack", lambda config, resources, slots: 100
    )
    assert [len(t) for t in make_tasks(configs, Resources(), slots=4)] == [3, 3, 3, 3]  # 12/4
    assert max(len(t) for t in make_tasks(configs, Resources(), slots=1)) <= AUTO_MAX_CELLS
    monkeypatch.setattr(
        "robustbench_opt.runner.packing.cells_per_pack", lambda config, resources, slots: 2
    )
    assert [len(t) for t in make_tasks(configs, Resources(), slots=1)] == [2] * 6
    assert tasks_module.AUTO_MAX_CELLS == AUTO_MAX_CELLS


def test_cells_per_pack_counts_activations_per_cell(monkeypatch):
    from robustbench_opt.runner import packing

    config = next(iter(grid().values()))
    monkeypatch.setattr(packing, "available_ram", lambda: 64 * 2**30)
    roomy = packing.cells_per_pack(config, Resources(), slots=1)
    monkeypatch.setattr(packing, "available_ram", lambda: 2**30 + 8 * 2**20)
    tight = packing.cells_per_pack(config, Resources(), slots=1)
    assert roomy > tight >= 1
    assert packing.cells_per_pack(config, Resources(), slots=8) >= 1


def test_the_feed_claims_one_trial_at_a_time_and_two_feeds_share_a_study(storage_url: str):
    configs = grid()
    store = Store(storage_url)
    store.register_study("s", {"name": "s"}, "hash-s", list(configs.values()))
    tasks = make_tasks(configs, Resources(packing=3), slots=1)
    first = _TaskFeed(store, "s", store.start_run("s"), tasks, configs)
    second = _TaskFeed(store, "s", store.start_run("s"), tasks, configs)
    assert first.suggest("t1")["cells"] == tasks[0]
    states = store.cells_frame("s").set_index("cell_id")["state"]
    assert (states == RUNNING).sum() == 3 and (states == PENDING).sum() == 9  # a window only
    assert second.suggest("t2")["cells"] == tasks[1]  # the first feed's cells are skipped
    handed = [first.suggest("t3"), second.suggest("t4"), first.suggest("t5")]
    assert [h["cells"] for h in handed[:2]] == tasks[2:4] and handed[2] == _TaskFeed.FINISHED
    assert sorted(first.claimed + second.claimed) == sorted(configs)  # each cell exactly once
    assert second.suggest("t6") == _TaskFeed.FINISHED
    store.close()


def test_a_trials_parameters_rebuild_its_cells_from_the_shared_group_configs(tmp_path):
    """Tune gets each group's shared config once and per trial only ids, lr, wd and seed; the
    worker rebuilds exactly the claimed configs (here for 2 groups, packs of 3)."""
    configs = grid()
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.register_study("s", {"name": "s"}, "hash-s", list(configs.values()))
    feed = _TaskFeed(
        store, "s", store.start_run("s"), make_tasks(configs, Resources(packing=3), 1), configs
    )
    shared = feed.shared()
    assert len(shared) == 2 and all("lr" not in group for group in shared)
    rebuilt = {}
    while (params := feed.suggest("t")) != _TaskFeed.FINISHED:
        assert len(json.dumps(params)) < 400  # no full configs in a trial's parameters
        group = shared[params["group"]]
        for cell, values in zip(params["cells"], params["per_cell"], strict=True):
            rebuilt[cell] = TrialConfig.from_dict(group | values)
    assert rebuilt == configs
    store.close()


@pytest.mark.parametrize("packing", ["off", "auto", 2])
def test_study_file_packing_setting_is_read(make_study, packing):
    from robustbench_opt.spec import load_study

    path = make_study("p", [0.1], resources={"cpus": 1, "packing": packing})
    assert load_study(path).resources.packing == packing


@pytest.mark.parametrize("packing", [0, "sometimes", True, 1.5])
def test_bad_packing_setting_is_one_line_naming_the_choices(make_study, packing):
    from robustbench_opt.errors import UserError
    from robustbench_opt.spec import load_study

    path = make_study("p", [0.1], resources={"cpus": 1, "packing": packing})
    with pytest.raises(UserError, match=r"resources\.packing.*expected auto, off or the most"):
        load_study(path)


def test_progress_off_a_terminal_is_bounded_to_every_1_percent(tmp_path):
    """10,000 cells finishing quickly print about 100 lines, not 20,000; the last always."""
    from robustbench_opt.runner.execute import _Recorder
    from robustbench_opt.states import DONE

    log = tmp_path / "progress.log"
    with open(log, "w") as stream:
        recorder = _Recorder(store=None, study="big", total=10_000, stream=stream)
        for k in range(10_000):
            recorder.running.add(str(k))
            recorder._end(str(k), DONE)
    lines = log.read_text().splitlines()
    assert 95 <= len(lines) <= 102, len(lines)
    assert lines[-1].startswith("big: 10000/10000 done (0 diverged), 0 running, 0 failed, 0 left")


def test_ctrl_c_stops_at_once_but_never_inside_a_database_write():
    """A real SIGINT while the run's handler is installed: inside an `_atomic` callback the write
    finishes first and the interrupt follows; outside one it is immediate."""
    ctrl_c = _CtrlC()
    wrote = []
    with ctrl_c.installed():
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.1)  # the handler runs here, in the middle of the "write"
                wrote.append("row")
        assert wrote == ["row"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
