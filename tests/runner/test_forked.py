"""Processes forked from the driver: several torch threads in a child of a driver that stays on
one, values and errors back from the child, and a real study's local workers on 2 threads."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
import yaml

from robustbench_opt.runner import forked
from robustbench_opt.storage import Store

# The driver's torch work after `one_thread` (1M-element ops: above torch's grain size, so on
# several threads they would start GNU OpenMP's pool, after which a forked child asking for 2
# threads hangs), then a 2-thread convolution in a forked child.
CHILD_AFTER_DRIVER = """
import torch
from robustbench_opt.runner import forked

forked.one_thread()
x = torch.randn(1_000_000)
for _ in range(5):
    (x * 2 + 1).sum()

def two_threads():
    torch.set_num_threads(2)
    w = torch.randn(8, 4, 3, 3)
    torch.nn.functional.conv2d(torch.randn(64, 4, 32, 32), w).sum()
    return torch.get_num_threads()

print(forked.call(two_threads))
"""


def test_a_child_runs_two_threads_after_the_driver_worked_on_one() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHILD_AFTER_DRIVER], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2"]


def _raises() -> None:
    raise ValueError("bad value 7")


def _dies() -> None:
    os._exit(3)


def test_call_returns_the_childs_value_or_names_what_went_wrong() -> None:
    assert forked.call(divmod, 7, 2) == (3, 1)
    with pytest.raises(RuntimeError, match=r"_raises in a forked process: ValueError: bad value 7"):
        forked.call(_raises)
    with pytest.raises(RuntimeError, match=r"_dies .* ended with exit code 3 before it answered"):
        forked.call(_dies)


@pytest.mark.slow
def test_a_study_trains_in_local_workers_of_two_threads(tmp_path) -> None:
    """`run` with 2 CPUs per trial: the driver plans on one thread and forks a worker that
    trains on two (recorded in the trial's runtime), without hanging."""
    study = {
        "name": "two",
        "dataset": "digits",
        "model": "simple_cnn",
        "recipe": {"epochs": 1, "batch_size": 64},
        "optimizers": ["adam"],
        "lrs": [0.01],
        "weight_decays": [0.0],
        "resources": {"cpus": 2, "gpus": 0, "executor": "local"},
    }
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(study))
    url = f"sqlite:///{tmp_path / 'r.db'}"
    command = [sys.executable, "-m", "robustbench_opt", "run", str(path), "--storage", url]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "(1 worker process of 2 threads forked by this one)" in out.stdout
    [trial] = optuna.load_study(study_name="two", storage=Store(url).optuna_storage).trials
    runtime = trial.user_attrs["record"]["runtime"]
    assert runtime["threads"] == 2 and runtime["trials_at_once"] == 1
