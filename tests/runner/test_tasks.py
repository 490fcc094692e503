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
from robustbench_opt.runner.feed import LOST_RETRIES, TaskFeed
from robustbench_opt.runner.interrupt import CtrlC
from robustbench_opt.runner.tasks import AUTO_MAX_CELLS, make_tasks, pack_size
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


def test_auto_packs_fit_memory_and_stop_at_the_cap(monkeypatch):
    configs = grid()
    fits = {"cells": 100}  # what memory allows (`memory.cells_per_pack`), set per case
    monkeypatch.setattr(
        "robustbench_opt.runner.memory.cells_per_pack",
        lambda config, resources, slots: fits["cells"],
    )
    assert [len(t) for t in make_tasks(configs, Resources(), slots=4)] == [6, 6]
    assert [len(t) for t in make_tasks(configs, Resources(), slots=4, most=4)] == [3] * 4
    fits["cells"] = 2
    assert [len(t) for t in make_tasks(configs, Resources(), slots=1)] == [2] * 6
    # One group of twice the cap, memory no limit: two packs of the cap.
    big = grid(optimizers=("adam",), lrs=[10.0**-k for k in range(2 * AUTO_MAX_CELLS)], seeds=(0,))
    fits["cells"] = 100
    assert [len(t) for t in make_tasks(big, Resources(), slots=1)] == [AUTO_MAX_CELLS] * 2


@pytest.mark.parametrize(
    ("cells", "slots", "speedup", "size", "why"),
    [
        # 3 groups of 6 on 2 slots: packs of 6 leave a slot idle for the third (2 rounds of
        # 6/1.75 = 6.9 steps alone); packs of 3 fill both (3 rounds of 0.51 + 3 x 0.49 = 5.9)
        (6, 2, 1.75, 3, "balance"),
        (6, 1, 1.75, 6, "one slot: the largest pack"),
        (6, 3, 1.75, 6, "one pack per slot"),
        (6, 18, 1.75, 1, "a slot per cell: one cell a trial is soonest"),
        (24, 2, 2.0, 12, "3 groups of 24 on 2 slots, at most 16 a pack: 6 packs of 12"),
        (6, 1, 0.9, 1, "packs that do not pay"),
    ],
)
def test_pack_size_finishes_soonest_on_the_slots(
    monkeypatch, cells: int, slots: int, speedup: float, size: int, why: str
) -> None:
    monkeypatch.setattr(
        "robustbench_opt.runner.memory.cells_per_pack", lambda config, resources, slots: 100
    )
    configs = grid(("adam", "sgd", "nag"), lrs=[10.0**-k for k in range(cells)], seeds=(0,))
    largest = max(map(len, make_tasks(configs, Resources(), slots)))  # what the plan probes
    got = pack_size(configs, Resources(), slots, largest, speedup)
    tasks = make_tasks(configs, Resources(), slots, got)
    assert max(map(len, tasks)) == size, why


def test_cells_per_pack_counts_activations_per_cell(monkeypatch):
    from robustbench_opt.runner import memory

    config = next(iter(grid().values()))
    monkeypatch.setattr(memory, "available_ram", lambda: 64 * 2**30)
    roomy = memory.cells_per_pack(config, Resources(), slots=1)
    monkeypatch.setattr(memory, "available_ram", lambda: 2**30 + 8 * 2**20)
    tight = memory.cells_per_pack(config, Resources(), slots=1)
    assert roomy > tight >= 1
    assert memory.cells_per_pack(config, Resources(), slots=8) >= 1


def test_the_feed_claims_one_trial_at_a_time_and_two_feeds_share_a_study(storage_url: str):
    configs = grid()
    store = Store(storage_url)
    store.register_study("s", {"name": "s"}, "hash-s", list(configs.values()))
    tasks = make_tasks(configs, Resources(packing=3), slots=1)
    first = TaskFeed(store, "s", store.start_run("s"), tasks, configs)
    second = TaskFeed(store, "s", store.start_run("s"), tasks, configs)
    assert first.suggest("t1")["cells"] == tasks[0]
    states = store.cells_frame("s").set_index("cell_id")["state"]
    assert (states == RUNNING).sum() == 3 and (states == PENDING).sum() == 9  # a window only
    assert second.suggest("t2")["cells"] == tasks[1]  # the first feed's cells are skipped
    handed = [first.suggest("t3"), second.suggest("t4"), first.suggest("t5")]
    # Nothing left to hand out, but t1 and t3 may still lose cells: "ask again", not FINISHED.
    assert [h["cells"] for h in handed[:2]] == tasks[2:4] and handed[2] is None
    first.settle("t1")
    assert first.suggest("t6") is None
    first.settle("t3")
    assert first.suggest("t7") == TaskFeed.FINISHED
    assert sorted([*first.claimed, *second.claimed]) == sorted(configs)  # each cell exactly once
    second.settle("t2")
    second.settle("t4")
    assert second.suggest("t8") == TaskFeed.FINISHED
    store.close()


def test_the_feed_hands_out_lost_cells_again_a_bounded_number_of_times(tmp_path):
    """Cells lost with a trial's worker go back to the front of the queue, are claimed again
    (the recorder recorded the lost attempt failed), and stop coming back after LOST_RETRIES;
    cells settled without a loss never come back."""
    configs = grid(optimizers=("adam",), seeds=(0,))  # 3 cells
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.register_study("s", {"name": "s"}, "hash-s", list(configs.values()))
    feed = TaskFeed(store, "s", store.start_run("s"), [[c] for c in configs], configs)
    first, second, third = configs
    assert feed.suggest("t1")["cells"] == [first]
    for attempt in range(LOST_RETRIES):
        store.record_start("s", first)
        store.record_failure("s", first, "ActorDiedError: lost", "")
        assert feed.settle(f"t1-{attempt}" if attempt else "t1", [first]) == [first]
        assert feed.suggest(f"t1-{attempt + 1}")["cells"] == [first]  # first again, before others
    store.record_start("s", first)
    store.record_failure("s", first, "ActorDiedError: lost", "")
    assert feed.settle(f"t1-{LOST_RETRIES}", [first]) == []  # bounded: failed, for the next run
    assert [feed.suggest("t2")["cells"], feed.suggest("t3")["cells"]] == [[second], [third]]
    assert feed.settle("t2") == [] and feed.settle("t3") == []
    assert feed.suggest("t4") == TaskFeed.FINISHED
    assert list(feed.claimed) == [first, second, third] and feed.total == 3 + LOST_RETRIES
    assert feed.handed_out == 3 + LOST_RETRIES
    store.close()


def test_a_trials_parameters_rebuild_its_cells_from_the_shared_group_configs(tmp_path):
    """Tune gets each group's shared config once and per trial only ids, lr, wd and seed; the
    worker rebuilds exactly the claimed configs (here for 2 groups, packs of 3)."""
    configs = grid()
    store = Store(f"sqlite:///{tmp_path / 'r.db'}")
    store.register_study("s", {"name": "s"}, "hash-s", list(configs.values()))
    feed = TaskFeed(
        store, "s", store.start_run("s"), make_tasks(configs, Resources(packing=3), 1), configs
    )
    shared = feed.shared()
    assert len(shared) == 2 and all("lr" not in group for group in shared)
    rebuilt = {}
    while (params := feed.suggest("t")) is not None:  # "ask again": t is never settled
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
    from robustbench_opt.runner.recorder import Recorder
    from robustbench_opt.states import DONE

    log = tmp_path / "progress.log"
    with open(log, "w") as stream:
        feed = TaskFeed(None, "big", "run", [], {})
        recorder = Recorder(
            store=None, study="big", total=10_000, stream=stream, feed=feed, trials_at_once=2
        )
        for k in range(10_000):
            recorder.running.add(str(k))
            recorder._end(str(k), DONE)
    lines = log.read_text().splitlines()
    assert 95 <= len(lines) <= 102, len(lines)
    assert lines[-1].startswith("big: 10000/10000 done (0 diverged), 0 running, 0 failed, 0 left")


@pytest.mark.parametrize(
    ("signum", "name"), [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")]
)
def test_ctrl_c_or_sigterm_stops_at_once_but_never_inside_a_database_write(signum, name):
    """A real SIGINT or SIGTERM while the run's handler is installed: inside an `atomic`
    callback the write finishes first and the interrupt follows; outside one it is immediate."""
    ctrl_c = CtrlC()
    wrote = []
    before = signal.getsignal(signum)
    with ctrl_c.installed():
        with pytest.raises(KeyboardInterrupt):
            with ctrl_c.deferred():
                os.kill(os.getpid(), signum)
                time.sleep(0.1)  # the handler runs here, in the middle of the "write"
                wrote.append("row")
        assert wrote == ["row"] and ctrl_c.caught == name
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signum)
            time.sleep(5)
    assert signal.getsignal(signum) is before  # restored
