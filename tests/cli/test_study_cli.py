"""`robustbench-opt run` and `status`, in process, on the session's local Ray."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

import robustbench_opt.runner.worker as worker
from robustbench_opt.cli import main
from robustbench_opt.cli.study import command_prefix, run_summary

pytestmark = pytest.mark.usefixtures("ray_local")
NO_RAY = ("ray", "robustbench_opt.runner.execute", "robustbench_opt.runner.connect")


@contextlib.contextmanager
def no_ray() -> Iterator[None]:
    """Importing Ray or the runner's Ray side fails inside. Only these entries of sys.modules
    are restored after: a whole-dict restore would also drop the torch modules first imported
    inside, and torch refuses to import them twice (its operator registry is process-wide)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in NO_RAY:
            patch.setitem(sys.modules, name, None)
        yield


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dump(path: Path) -> list[str]:
    """Every row of the SQLite database, as SQL."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ray_local, fake_trial, study_writer):
    """A study run to completion once: (study file, storage URL, database file)."""
    root = tmp_path_factory.mktemp("finished")
    path = study_writer(root / "done.yaml", "done", [0.1, 0.01])
    db = root / "r.db"
    with mock.patch.object(worker, "default_trial_fn", fake_trial()):
        assert main(["run", str(path), "--storage", f"sqlite:///{db}"]) == 0
    return path, f"sqlite:///{db}", db


def test_dry_run_writes_nothing(tmp_path: Path, make_study, capsys) -> None:
    path = make_study("dry", [0.1, 0.01, 0.001])
    with no_ray():  # a local dry run starts no Ray
        code, out, _ = run_cli(
            ["run", str(path), "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--dry-run"]
            + ["--max-concurrent", "2"],  # the pack sizes follow the slots, not this machine's
            capsys,
        )
    assert code == 0
    assert "6 total, 0 done, 0 diverged, 0 failed, 0 running elsewhere; 6 to run" in out
    assert (
        "trials: 2 (packing auto: up to 3 cells per trial, 2 x 3 cells, for 2 slots on this " in out
    )
    assert "cost: about " in out and "(12 epochs in 2 trials; calibrated by timing" in out
    assert "ms per image and cell in packs of 3, timed now)" in out
    assert not (tmp_path / "r.db").exists()


def test_the_run_reads_the_dry_runs_figures_unless_recalibrating(
    tmp_path: Path, make_study, capsys, monkeypatch, calibration_cache: Path
) -> None:
    """The figures a dry run timed are read by the next plan on this machine, and the plan
    says so; --recalibrate times them anew (an injected timer, counted)."""
    import robustbench_opt.runner.plan as plan

    timed: list[int] = []
    monkeypatch.setattr(
        plan, "time_training_images", lambda config, steps, cells: timed.append(cells) or 1e-3
    )
    path = make_study("cal", [0.1, 0.01, 0.001])
    argv = ["run", str(path), "--storage", f"sqlite:///{tmp_path / 'r.db'}", "--dry-run"]
    argv += ["--max-concurrent", "2"]
    outs = []
    for extra in ([], [], ["--recalibrate"]):
        with no_ray():
            code, out, _ = run_cli(argv + extra, capsys)
        assert code == 0
        outs.append(out.split("cost: ")[1].splitlines()[0])
    assert timed == [3, 3]  # a pack of 3: by the first dry run and the recalibrating one
    assert outs[0].endswith("packs of 3, timed now)") and outs[2] == outs[0]
    assert "packs of 3, from this machine's calibration cache, measured " in outs[1]
    assert (calibration_cache / "calibration.json").exists() and not (tmp_path / "r.db").exists()


def test_run_only_edits_keep_the_study(finished, tmp_path: Path, study_writer, capsys) -> None:
    """Description, data location and resources change how a study runs, not what it measures:
    editing them (or passing --data-dir) resumes the same study instead of refusing it."""
    path, url, db = finished
    edited = study_writer(
        tmp_path / "done.yaml",
        "done",
        [0.1, 0.01],
        description="edited",
        data_dir="elsewhere",
        resources={"cpus": 2, "gpus": 0},
        max_concurrent=1,
    )
    before = digest(db)
    with no_ray():
        code, out, _ = run_cli(["run", str(edited), "--storage", url, "--data-dir", "x"], capsys)
    assert code == 0
    assert "nothing to train: all 4 cells are finished" in out
    assert digest(db) == before


def test_finished_study_trains_nothing_and_starts_no_ray(finished, capsys) -> None:
    path, url, db = finished
    before = digest(db)
    with no_ray():
        code, out, _ = run_cli(["run", str(path), "--storage", url], capsys)
    assert code == 0
    assert "nothing to train: all 4 cells are finished" in out
    assert "adam" in out and "sgd" in out and "optuna-dashboard " + url in out
    assert f" report done --storage {url} -o done-report.html" in out
    assert digest(db) == before


def test_run_closes_with_exactly_what_scores_prints(finished, capsys) -> None:
    """The end-of-run table, verdict and notes are `scores STUDY`'s own output, number for
    number (they once pooled variants and computed variance over trials)."""
    path, url, _ = finished
    with no_ray():
        code, run_out, _ = run_cli(["run", str(path), "--storage", url], capsys)
    assert code == 0
    code, scores_out, _ = run_cli(["scores", "done", "--storage", url], capsys)
    assert code == 0 and "Ranked by mean accuracy" in scores_out
    assert scores_out in run_out


def test_toggling_compile_resumes_the_finished_study(
    finished, tmp_path: Path, study_writer, capsys
) -> None:
    """Speed switches are not identity: the same cells, so nothing to train, nothing written."""
    path, url, db = finished
    faster = study_writer(
        tmp_path / "done.yaml",
        "done",
        [0.1, 0.01],
        recipe={"epochs": 2, "batch_size": 64, "compile": True, "channels_last": True},
    )
    before = digest(db)
    with no_ray():
        code, out, err = run_cli(["run", str(faster), "--storage", url], capsys)
    assert code == 0, err
    assert "nothing to train: all 4 cells are finished" in out
    assert digest(db) == before


def test_missing_cifar_data_fails_before_the_database_is_created(
    tmp_path: Path, make_study, capsys
) -> None:
    missing = tmp_path / "no-cifar"
    path = make_study("cifar", [0.1], dataset="cifar10", model="resnet20", data_dir=str(missing))
    db = tmp_path / "r.db"
    with no_ray():  # no Ray
        code, out, err = run_cli(["run", str(path), "--storage", f"sqlite:///{db}"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"no CIFAR-10 files in '{missing}'" in err
    assert "set download to true" in err and "(command line: --data-dir)" in err
    assert not db.exists()


def test_missing_cifar_data_leaves_an_existing_database_unchanged(
    finished, tmp_path: Path, make_study, capsys
) -> None:
    _, url, db = finished
    path = make_study("cifar", [0.1], dataset="cifar10", model="resnet20", data_dir=str(tmp_path))
    before = dump(db)
    with no_ray():
        code, _, err = run_cli(["run", str(path), "--storage", url], capsys)
    assert code == 2 and "no CIFAR-10 files" in err
    assert dump(db) == before


def test_command_prefix_is_how_this_program_was_started(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = tmp_path / ".venv" / "bin" / "robustbench-opt"
    assert command_prefix(str(script)) == ".venv/bin/robustbench-opt"
    assert command_prefix(".venv/bin/robustbench-opt") == ".venv/bin/robustbench-opt"
    assert command_prefix("robustbench-opt") == "robustbench-opt"  # found on PATH
    assert command_prefix("/elsewhere/bin/robustbench-opt") == "/elsewhere/bin/robustbench-opt"
    module = command_prefix("/src/robustbench_opt/__main__.py")
    assert module.endswith(" -m robustbench_opt") and "python" in module


def test_run_summary_says_what_the_ratio_means() -> None:
    parallel = run_summary(30, 61.0, 76.0)
    assert parallel == (
        "trained 30 cells in 1m01s of wall time; the trials themselves took 1m16s added up, "
        "so the run took 0.80 x their training time (trials ran in parallel)"
    )
    assert "(the rest is starting Ray and scheduling trials)" in run_summary(4, 42.0, 26.6)
    assert run_summary(0, 5.0, 0.0) == "trained 0 cells in 5s of wall time"
    assert "(the rest is claims and records)" in run_summary(1, 1.2, 1.0, "local")


def test_status_counts_per_optimizer(finished, capsys) -> None:
    _, url, _ = finished
    code, out, _ = run_cli(["status", "done", "--storage", url], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].strip() == "study done: 4 cells"
    header = next(line for line in lines if line.startswith("┃"))
    assert header.strip("┃").replace("┃", " ").split() == [
        "optimizer", "done", "diverged", "failed", "running", "pending"
    ]  # fmt: skip
    rows = [line.strip("│").replace("│", " ").split() for line in lines if line.startswith("│")]
    assert rows[0] == ["adam", "2", "0", "0", "0", "0"]
    assert rows[-1] == ["total", "4", "0", "0", "0", "0"]


def test_status_of_unknown_study_is_one_line(finished, capsys) -> None:
    _, url, _ = finished
    code, _, err = run_cli(["status", "dnoe", "--storage", url], capsys)
    assert code == 2
    assert err.startswith("error: unknown study 'dnoe'; did you mean 'done'?")
    assert err.count("\n") == 1


def test_changed_study_file_is_refused_with_the_diff(
    finished, tmp_path: Path, study_writer, capsys
) -> None:
    _, url, db = finished
    before = digest(db)
    changed = study_writer(tmp_path / "done.yaml", "done", [0.1, 0.02])
    code, _, err = run_cli(["run", str(changed), "--storage", url], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "was run from a different study file" in err and "lrs" in err
    assert "--study-name NEW" in err
    assert digest(db) == before
    code, out, _ = run_cli(
        ["run", str(changed), "--storage", url, "--study-name", "done2", "--dry-run"], capsys
    )
    assert code == 0 and "4 to run" in out
    assert digest(db) == before


def test_failed_cells_exit_nonzero_and_are_named(
    tmp_path: Path, make_study, fake_trial, capsys
) -> None:
    path = make_study("bad", [0.1, 0.5], optimizers=["adam"])
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with mock.patch.object(worker, "default_trial_fn", fake_trial(fail_lr=0.5)):
        code, out, err = run_cli(["run", str(path), "--storage", url], capsys)
    assert code == 1
    [line] = [x for x in err.splitlines() if x.startswith("failed: cell")]
    assert "(adam, default, lr=0.5, wd=0, seed=0): ValueError: boom at lr=0.5" in line
    assert "1 cells failed; run again to retry them" in err
    assert "1/2 done" in err  # the progress line


def test_a_cell_lost_with_its_worker_is_retried_and_the_run_exits_0(
    tmp_path: Path, make_study, fake_trial, capsys
) -> None:
    path = make_study("lost", [0.1], optimizers=["adam"])
    url = f"sqlite:///{tmp_path / 'r.db'}"
    fake = fake_trial(die_lr=0.1, died=str(tmp_path / "died"))  # its worker dies the first time
    with mock.patch.object(worker, "default_trial_fn", fake):
        code, out, err = run_cli(["run", str(path), "--storage", url], capsys)
    assert code == 0, err
    lost = "retried 1 cells in this run: their worker process or node was lost (ActorDiedError: "
    assert lost in err
    assert "trained 1 cells in " in out and "failed" not in err.replace("0 failed", "")


@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_run_never_prints_the_database_password(
    storage_url: str, make_study, fake_trial, capsys
) -> None:
    url = storage_url.replace("://postgres@", "://postgres:s3cret-pw@")  # trust auth ignores it
    assert "s3cret-pw" in url
    path = make_study("secret", [0.1])
    with mock.patch.object(worker, "default_trial_fn", fake_trial()):
        code, out, err = run_cli(["run", str(path), "--storage", url], capsys)
    assert code == 0
    assert "s3cret-pw" not in out + err
    # The dashboard hint quotes the URL (its *** is special to a shell) when optuna-dashboard
    # is installed, and names the pip command when it is not: either way the password is hidden.
    [dashboard] = [line for line in out.splitlines() if "optuna-dashboard" in line]
    assert "postgres:***@127.0.0.1" in out and "postgresql+psycopg://postgres:***@" in dashboard
