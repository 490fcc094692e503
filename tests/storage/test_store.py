"""The storage contract, run against SQLite and a real PostgreSQL server (`storage_url`)."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from robustbench_opt.config import EpochRecord, TrialConfig, TrialResult
from robustbench_opt.errors import UserError
from robustbench_opt.storage import SpecChanged, Store, resolve_url
from robustbench_opt.storage.optuna_trials import CellKey, study_distributions
from robustbench_opt.storage.tables import RESULTS_VIEW_COLUMNS

STUDY = "s1"
SPEC = {"name": STUDY, "lrs": [0.1, 0.01], "weight_decays": [0.0, 1e-4]}
SPEC_HASH = "hash-of-s1"  # storage stores and compares the hash it is given


def make_cells(labels: tuple[str, ...] = ("adam", "sgd")) -> list[TrialConfig]:
    return [
        TrialConfig(dataset="digits", model="simple_cnn", optimizer=opt, lr=lr, weight_decay=wd)
        for opt in labels
        for lr in SPEC["lrs"]
        for wd in SPEC["weight_decays"]
    ]


def make_result(config: TrialConfig, accs: list[float], status: str = "completed") -> TrialResult:
    epochs = [
        EpochRecord(
            epoch=i + 1,
            train_loss=1.0 / (i + 1),
            train_acc=acc,
            test_loss=2.0 / (i + 1),
            test_acc=acc,
            lr=config.lr,
            seconds=0.5,
        )
        for i, acc in enumerate(accs)
    ]
    best = max(range(len(accs)), key=lambda i: accs[i])
    return TrialResult(
        status=status,
        epochs=epochs,
        final_test_acc=accs[-1],
        best_test_acc=accs[best],
        best_epoch=best + 1,
        test_acc_at_best_val=None,
        best_val_epoch=None,
        diverged_reason="loss is nan" if status == "diverged" else None,
        optimizer_kwargs={"lr": config.lr},
        weight_decay_mode="l2",
        n_params=10,
        device="cpu",
        versions={"torch": "x"},
        wall_seconds=1.25,
        config=config.to_dict(),
    )


@pytest.fixture
def store(storage_url: str) -> Store:
    s = Store(storage_url)
    s.register_study(STUDY, SPEC, SPEC_HASH, make_cells())
    return s


def optuna_trials(store: Store, study: str = STUDY) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=study, storage=store.optuna_storage).trials


def test_storage_knows_nothing_of_study_files() -> None:
    code = "import sys, robustbench_opt.storage; sys.exit('robustbench_opt.spec' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_register_creates_pending_cells_once(store: Store) -> None:
    store.register_study(STUDY, SPEC, SPEC_HASH, make_cells())  # idempotent
    frame = store.cells_frame(STUDY)
    assert len(frame) == 8
    assert set(frame["state"]) == {"pending"}
    assert sorted(frame["optimizer"].unique()) == ["adam", "sgd"]
    assert frame["final_test_acc"].isna().all()
    assert store.has_study(STUDY) and not store.has_study("other")
    [summary] = store.list_studies()
    assert (summary.name, summary.source, summary.n_cells, summary.pending) == (STUDY, "run", 8, 8)
    assert summary.created.tzinfo is not None


def test_changed_spec_hash_under_same_name_is_refused(store: Store) -> None:
    with pytest.raises(SpecChanged) as info:
        store.register_study(STUDY, {**SPEC, "lrs": [0.1]}, "hash-of-another-s1", make_cells())
    assert info.value.record.spec == SPEC
    assert info.value.record.spec_hash == SPEC_HASH
    assert len(store.cells_frame(STUDY)) == 8


def test_the_hash_given_decides_and_the_first_spec_stays(store: Store) -> None:
    """Storage compares the caller's hash, never one of its own: a spec that differs where the
    caller's hash does not look (a run-only key) registers again and keeps the stored spec."""
    store.register_study(STUDY, {**SPEC, "description": "edited"}, SPEC_HASH, make_cells())
    record = store.study_record(STUDY)
    assert record is not None and (record.spec, record.spec_hash) == (SPEC, SPEC_HASH)


def test_new_cell_ids_under_unchanged_spec_are_refused(store: Store) -> None:
    with pytest.raises(UserError, match="cell identities are new"):
        store.register_study(STUDY, SPEC, SPEC_HASH, make_cells(("adam", "sgd", "radam")))


def test_two_stores_never_claim_the_same_cell(storage_url: str, store: Store) -> None:
    other = Store(storage_url)
    ids = list(store.cells_frame(STUDY)["cell_id"])
    run_a, run_b = store.start_run(STUDY), other.start_run(STUDY)
    got_a = store.claim(STUDY, run_a, ids[:5])
    got_b = other.claim(STUDY, run_b, ids)
    assert got_a == ids[:5]
    assert got_b == ids[5:]
    assert store.claim(STUDY, run_a, ids) == ids[:5]  # already ours, nothing new
    frame = store.cells_frame(STUDY)
    assert set(frame["state"]) == {"running"}


CLAIMER = textwrap.dedent(
    """
    import json, sys
    from robustbench_opt.storage import Store
    store = Store(sys.argv[1])
    ids = json.loads(sys.argv[2])
    run = store.start_run("s1")
    got = []
    for cell in ids:  # one claim per cell maximises interleaving
        got += store.claim("s1", run, [cell])
    print(json.dumps(got))
    """
)


def test_concurrent_processes_partition_the_cells(storage_url: str, store: Store) -> None:
    ids = list(store.cells_frame(STUDY)["cell_id"])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, storage_url, json.dumps(order)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for order in (ids, ids[::-1])
    ]
    claims = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(claims[0] + claims[1]) == sorted(ids)
    assert not set(claims[0]) & set(claims[1])


OPENER = textwrap.dedent(
    """
    import sys, time
    from robustbench_opt.storage import Store
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # all start at the same moment
    Store(sys.argv[1]).list_studies()
    """
)


def test_processes_opening_a_new_database_at_once_all_succeed(storage_url: str) -> None:
    """Two `run`s started together on a new database both create its schema: neither may fail."""
    start = str(time.time() + 3.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, storage_url, start], stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors


def test_closed_stores_hold_no_connections(storage_url: str) -> None:
    """A process that opens Store after Store (a poll loop, a notebook calling load_results)
    must not run PostgreSQL out of connections (its default limit is 100)."""
    if not storage_url.startswith("postgresql"):
        pytest.skip("connections are counted on the PostgreSQL server")
    with Store(storage_url) as observer:

        def connections() -> int:  # a new transaction each time: a fresh statistics snapshot
            with observer.optuna_storage.engine.connect() as conn:
                query = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()"
                return conn.execute(sa.text(query)).scalar_one()

        before = connections()
        gc.disable()  # a dropped Store's pool lives until a cyclic collection: none here
        try:
            for _ in range(10):
                with Store(storage_url, create=False) as store:
                    store.list_studies()
            # A closed client's server process ends a moment after the disconnect: wait for the
            # count to settle rather than read it once (10 leaked stores would hold 20 forever).
            deadline = time.monotonic() + 30
            while connections() > before and time.monotonic() < deadline:
                time.sleep(0.1)
            assert connections() == before
        finally:
            gc.enable()


def test_result_epochs_and_optuna_trial(store: Store) -> None:
    cells = {c.cell_id(STUDY): c for c in make_cells()}
    cell_id = next(iter(cells))
    run = store.start_run(STUDY)
    store.claim(STUDY, run, [cell_id])
    store.record_start(STUDY, cell_id)
    result = make_result(cells[cell_id], [0.5, 0.75, 0.7])
    for record in result.epochs[:2]:
        store.record_epoch(STUDY, cell_id, record)
    assert list(store.epochs_frame(STUDY)["epoch"]) == [1, 2]
    [running] = optuna_trials(store)
    assert running.state == TrialState.RUNNING
    assert running.intermediate_values == {1: 0.5, 2: 0.75}
    store.record_result(STUDY, cell_id, result)

    row = store.cells_frame(STUDY).set_index("cell_id").loc[cell_id]
    assert row["state"] == "done"
    assert (row["final_test_acc"], row["best_test_acc"], row["best_epoch"]) == (0.7, 0.75, 2)
    assert row["epochs_run"] == 3 and row["seconds"] == 1.25
    assert math.isnan(row["test_acc_at_best_val"])
    epochs = store.epochs_frame(STUDY)
    assert list(epochs["test_acc"]) == [0.5, 0.75, 0.7]
    assert list(epochs["train_loss"]) == pytest.approx([1.0, 0.5, 1 / 3], rel=1e-12)
    assert epochs["val_acc"].isna().all()

    [trial] = optuna_trials(store)
    assert trial.state == TrialState.COMPLETE and trial.value == 0.7
    assert trial.params == {
        "optimizer": "adam",
        "variant": "default",
        "lr": 0.1,
        "weight_decay": 0.0,
        "seed": 0,
    }
    assert trial.intermediate_values == {1: 0.5, 2: 0.75, 3: 0.7}
    assert trial.user_attrs["cell_id"] == cell_id
    assert trial.user_attrs["diverged"] is False
    assert trial.user_attrs["record"]["weight_decay_mode"] == "l2"
    assert store.claim(STUDY, run, [cell_id]) == []  # a finished cell is never claimed again


def test_diverged_is_a_complete_trial(store: Store) -> None:
    config = make_cells()[1]
    cell_id = config.cell_id(STUDY)
    run = store.start_run(STUDY)
    store.claim(STUDY, run, [cell_id])
    store.record_start(STUDY, cell_id)
    store.record_result(STUDY, cell_id, make_result(config, [0.3, 0.1], status="diverged"))
    row = store.cells_frame(STUDY).set_index("cell_id").loc[cell_id]
    assert (row["state"], row["final_test_acc"], row["error"]) == ("diverged", 0.1, "loss is nan")
    [trial] = optuna_trials(store)
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["diverged"] is True


def test_failure_is_recorded_and_retried(store: Store) -> None:
    config = make_cells()[2]
    cell_id = config.cell_id(STUDY)
    run = store.start_run(STUDY)
    store.claim(STUDY, run, [cell_id])
    store.record_start(STUDY, cell_id)
    store.record_failure(STUDY, cell_id, "ValueError: boom", "Traceback ...")
    row = store.cells_frame(STUDY).set_index("cell_id").loc[cell_id]
    assert (row["state"], row["error"]) == ("failed", "ValueError: boom")
    [trial] = optuna_trials(store)
    assert trial.state == TrialState.FAIL and trial.user_attrs["error"] == "ValueError: boom"
    rerun = store.start_run(STUDY)
    assert store.claim(STUDY, rerun, [cell_id]) == [cell_id]
    store.record_start(STUDY, cell_id)
    store.record_result(STUDY, cell_id, make_result(config, [0.9]))
    states = sorted(t.state.name for t in optuna_trials(store))
    assert states == ["COMPLETE", "FAIL"]
    assert store.list_studies()[0].done == 1


def test_release_returns_unstarted_cells_and_fails_started_ones(store: Store) -> None:
    ids = list(store.cells_frame(STUDY)["cell_id"])[:2]
    run = store.start_run(STUDY)
    store.claim(STUDY, run, ids)
    store.record_start(STUDY, ids[0])
    assert sorted(store.release(run)) == sorted(ids)
    states = store.cells_frame(STUDY).set_index("cell_id")["state"]
    assert (states[ids[0]], states[ids[1]]) == ("failed", "pending")
    assert [t.state for t in optuna_trials(store)] == [TrialState.FAIL]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_claim_of_a_dead_process_is_recovered(store: Store) -> None:
    cells = make_cells()
    ids = [c.cell_id(STUDY) for c in cells[:3]]
    dead = store.start_run(STUDY)
    store.claim(STUDY, dead, ids)
    store.record_start(STUDY, ids[0])
    store.record_start(STUDY, ids[1])
    # ids[1] finished in Optuna but the process died before writing our row: adopted.
    row = store.cells_frame(STUDY).set_index("cell_id").loc[ids[1]]
    result = make_result(cells[1], [0.6])
    [tid] = [t._trial_id for t in optuna_trials(store) if t.user_attrs["cell_id"] == ids[1]]
    store.optuna_storage.set_trial_user_attr(tid, "record", result.to_dict())
    store.optuna_storage.set_trial_state_values(tid, TrialState.COMPLETE, [0.6])
    assert row["state"] == "running"
    alive = store.start_run(STUDY)
    assert store.stale_runs(STUDY) == []  # heartbeats fresh, pids alive
    with store.optuna_storage.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE rbo_run SET pid = :pid WHERE run_id = :r"),
            {"pid": dead_pid(), "r": dead},
        )
    assert store.stale_runs(STUDY) == [dead]
    recovered = store.recover_stale(STUDY)
    assert sorted(recovered.failed) == sorted([ids[0], ids[2]])
    assert recovered.adopted == [ids[1]]
    states = store.cells_frame(STUDY).set_index("cell_id")["state"]
    assert [states[i] for i in ids] == ["failed", "done", "failed"]
    assert not [t for t in optuna_trials(store) if t.state == TrialState.RUNNING]
    assert sorted(store.claim(STUDY, alive, ids)) == sorted([ids[0], ids[2]])
    assert store.stale_runs(STUDY) == []


def test_silent_run_is_stale_after_the_timeout(store: Store) -> None:
    run = store.start_run(STUDY)
    assert store.stale_runs(STUDY, stale_after_s=60) == []
    assert store.stale_runs(STUDY, stale_after_s=-1) == [run]


IMPORT_ROWS = [
    {
        "optimizer": "adam",
        "variant": "default",
        "lr": lr,
        "weight_decay": 1e-4,
        "seed": 0,
        "final_test_acc": acc,
        "diverged": False,
    }  # fmt: skip
    for lr, acc in ((0.1, 0.9), (0.01, 0.95), (0.001, 0.93))
]


def test_import_writes_complete_trials(store: Store) -> None:
    rows = [*IMPORT_ROWS, {**IMPORT_ROWS[0], "optimizer": "nag", "best_test_acc": 0.91,
                           "epochs": 300, "diverged": True}]  # fmt: skip
    store.import_cells("paper", rows, "paper Table 2")
    frame = store.cells_frame("paper")
    assert list(frame["final_test_acc"]) == [0.9, 0.95, 0.93, 0.9]
    assert list(frame["state"]) == ["done", "done", "done", "diverged"]
    assert frame["epochs_run"].iloc[3] == 300 and frame["best_test_acc"].iloc[3] == 0.91
    trials = optuna_trials(store, "paper")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert [t.value for t in trials] == [0.9, 0.95, 0.93, 0.9]
    sources = {s.name: s.source for s in store.list_studies()}
    assert sources == {STUDY: "run", "paper": "import"}
    record = store.study_record("paper")
    assert record is not None
    stored = hashlib.sha256(json.dumps(record.spec, sort_keys=True).encode()).hexdigest()
    assert record.spec_hash == stored
    with pytest.raises(UserError, match="already exists"):
        store.import_cells("paper", IMPORT_ROWS, "again")
    with pytest.raises(UserError, match="already exists"):
        store.import_cells(STUDY, IMPORT_ROWS, "clash")


def test_bulk_import_reads_back_as_optuna_writes_it(store: Store) -> None:
    """The bulk path writes Optuna's tables directly; `optuna.load_study` must read exactly the
    trials Optuna's own API writes for the same rows (so optuna-dashboard shows them)."""
    rows = [*IMPORT_ROWS, {**IMPORT_ROWS[0], "optimizer": "radam", "seed": 3, "final_test_acc":
            None, "diverged": True, "best_test_acc": 0.5, "epochs": 7}]  # fmt: skip
    store.import_cells("bulk", rows, "paper Table 2")
    reference = optuna.create_study(
        study_name="reference", storage=store.optuna_storage, direction="maximize"
    )
    keys = [CellKey(r["optimizer"], r["variant"], r["lr"], r["weight_decay"], r["seed"])
            for r in rows]  # fmt: skip
    dists = study_distributions(keys)
    for key, trial in zip(keys, optuna_trials(store, "bulk"), strict=True):
        reference.add_trial(
            optuna.trial.create_trial(
                params=key.params(),
                distributions=dists,
                value=trial.value,
                user_attrs=trial.user_attrs,
            )
        )
    bulk = optuna.load_study(study_name="bulk", storage=store.optuna_storage)
    assert bulk.direction == optuna.study.StudyDirection.MAXIMIZE
    assert bulk.user_attrs == {"source": "import", "note": "paper Table 2"}
    fields = ("number", "state", "value", "params", "distributions", "user_attrs",
              "system_attrs", "intermediate_values")  # fmt: skip
    got = [[getattr(t, f) for f in fields] for t in bulk.trials]
    want = [[getattr(t, f) for f in fields] for t in reference.trials]
    assert got == want
    assert [t.value for t in bulk.trials] == [0.9, 0.95, 0.93, 0.0]  # no accuracy scores 0
    assert bulk.trials[3].user_attrs["diverged"] is True
    assert bulk.trials[3].user_attrs["record"]["row"]["epochs"] == 7
    assert bulk.best_trial.number == 1
    assert all(t.datetime_complete >= t.datetime_start for t in bulk.trials)
    cells = store.cells_frame("bulk").set_index("cell_id")
    assert [t.user_attrs["cell_id"] for t in bulk.trials] == list(cells.index)
    assert cells["state"].tolist() == ["done", "done", "done", "diverged"]
    summaries = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(
        store.optuna_storage)}  # fmt: skip
    assert summaries["bulk"] == 4


def test_import_stores_the_number_of_classes(store: Store) -> None:
    store.import_cells("c100", IMPORT_ROWS, "note", num_classes=100)
    store.import_cells("c10", IMPORT_ROWS, "note")
    assert store.study_record("c100").spec == {"import": "note", "num_classes": 100}
    assert store.study_record("c10").spec["num_classes"] == 10
    with pytest.raises(UserError, match="num_classes=0 is not a whole number >= 1"):
        store.import_cells("c0", IMPORT_ROWS, "note", num_classes=0)
    assert not store.has_study("c0")


def test_import_is_all_or_nothing(store: Store) -> None:
    """Rows that repeat a cell fail on the cell table's unique key, written last: the Optuna
    study and trials written before it in the same transaction are gone too."""
    with pytest.raises(UserError, match="nothing was written"):
        store.import_cells("paper", [*IMPORT_ROWS, IMPORT_ROWS[0]], "note")
    assert not store.has_study("paper")
    names = [s.study_name for s in store.optuna_storage.get_all_studies()]
    assert names == [STUDY]
    assert store.cells_frame("paper").empty
    with store.optuna_storage.engine.connect() as conn:
        n_trials = conn.execute(sa.text("SELECT COUNT(*) FROM trials")).scalar_one()
    assert n_trials == 0
    store.import_cells("paper", IMPORT_ROWS, "note")  # the name is free again
    assert len(optuna_trials(store, "paper")) == 3


def test_import_refuses_an_empty_table(store: Store) -> None:
    with pytest.raises(UserError, match="no rows"):
        store.import_cells("paper", [], "note")
    assert [s.name for s in store.list_studies()] == [STUDY]


README = Path(__file__).parents[2] / "README.md"


def readme_section() -> str:
    """The README's "Querying the database" section."""
    return README.read_text().split("## Querying the database", 1)[1].split("\n## ", 1)[0]


def readme_sql() -> str:
    """The section's block of example queries."""
    [block] = re.findall(r"```sql\n(.*?)```", readme_section(), re.S)
    return block


def quickstart(store: Store) -> list[str]:
    """Study "quickstart" (the README's examples): 4 cells done, 1 diverged, 1 failed, 2 pending."""
    cells = make_cells()
    store.register_study("quickstart", SPEC, "hash-of-quickstart", cells)
    ids = [c.cell_id("quickstart") for c in cells]
    run = store.start_run("quickstart")
    store.claim("quickstart", run, ids[:6])
    for i, config in enumerate(cells[:5]):
        store.record_start("quickstart", ids[i])
        status = "diverged" if i == 4 else "completed"
        store.record_result("quickstart", ids[i], make_result(config, [0.5 + 0.05 * i], status))
    store.record_start("quickstart", ids[5])
    store.record_failure("quickstart", ids[5], "ValueError: boom")
    return ids


def test_results_view_has_one_row_per_cell(store: Store) -> None:
    quickstart(store)
    with store.optuna_storage.engine.connect() as conn:
        result = conn.execute(sa.text("SELECT * FROM rbo_results ORDER BY study, cell_id"))
        columns, rows = list(result.keys()), result.all()
    assert tuple(columns) == RESULTS_VIEW_COLUMNS
    expected = []
    for study in sorted(["quickstart", STUDY]):
        frame = store.cells_frame(study).sort_values("cell_id").assign(study=study)
        expected += list(frame[list(RESULTS_VIEW_COLUMNS)].itertuples(index=False))

    def plain(row: tuple) -> tuple:
        return tuple(None if isinstance(v, float) and math.isnan(v) else v for v in row)

    assert [plain(tuple(r)) for r in rows] == [plain(tuple(r)) for r in expected]
    assert [r.state for r in rows if r.study == "quickstart"].count("done") == 4


def test_readme_queries_run_and_answer(store: Store) -> None:
    quickstart(store)
    queries = [q.strip() for q in readme_sql().split(";") if q.strip()]
    with store.optuna_storage.engine.connect() as conn:
        states, means, best, failed = [conn.execute(sa.text(q)).all() for q in queries]
    assert [tuple(r) for r in states] == [("diverged", 1), ("done", 4), ("failed", 1),
                                          ("pending", 2)]  # fmt: skip
    assert [(r[0], r[1], float(r[2])) for r in means] == [("sgd", 1, 70.0), ("adam", 4, 57.5)]
    assert [r.acc for r in best] == pytest.approx([0.7, 0.65, 0.6, 0.55, 0.5], abs=1e-12)
    assert [(r.optimizer, r.error) for r in failed] == [("sgd", "ValueError: boom")]


def test_readme_queries_run_in_sqlite3_and_psql(store: Store, storage_url: str) -> None:
    """The example block and the section's one-line queries, through the command-line clients."""
    quickstart(store)
    if storage_url.startswith("sqlite"):
        client = ["sqlite3", "-bail", "-header", "-column", storage_url.removeprefix("sqlite:///")]
        command = client
    else:
        client = ["psql", "-X", "-v", "ON_ERROR_STOP=1", storage_url.replace("+psycopg", "")]
        command = [*client, "-c"]
    if shutil.which(client[0]) is None:
        pytest.skip(f"{client[0]} is not installed")
    block = subprocess.run(client, input=readme_sql(), capture_output=True, text=True, timeout=60)
    assert block.returncode == 0 and not block.stderr, block.stderr
    assert "ValueError: boom" in block.stdout
    one_liners = re.findall(rf'{client[0]} .*"(SELECT [^"]+)"', readme_section())
    assert len(one_liners) == 1
    line = subprocess.run([*command, one_liners[0]], capture_output=True, text=True, timeout=60)
    assert line.returncode == 0 and "cell_id" in line.stdout, line.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql+psycopg://u:secret@127.0.0.1:1/db", "cannot open storage"),
        ("not a url", "invalid storage URL"),
        ("sqlite:////nonexistent/dir/x.db", "does not exist"),
    ],
)
def test_bad_url_is_one_line(url: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        Store(url)
    assert "\n" not in str(info.value)
    assert "secret" not in str(info.value)


def test_read_only_open_refuses_missing_file(tmp_path) -> None:
    with pytest.raises(UserError, match="no results database"):
        Store(f"sqlite:///{tmp_path / 'x.db'}", create=False)
    assert not (tmp_path / "x.db").exists()


def test_resolve_url_prefers_argument_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTBENCH_STORAGE", "sqlite:///env.db")
    assert resolve_url("sqlite:///arg.db") == "sqlite:///arg.db"
    assert resolve_url(None) == "sqlite:///env.db"
    monkeypatch.delenv("ROBUSTBENCH_STORAGE")
    assert resolve_url(None) == "sqlite:///storage/robustbench.db"
