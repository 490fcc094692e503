"""The results commands end to end on a real SQLite database built through the storage code."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from robustbench_opt.analysis.results_csv import paper_table_path
from robustbench_opt.cli import main
from robustbench_opt.config import TrialConfig
from robustbench_opt.storage import Store

TABLE3_LAYOUT = [
    ["lr \\ wd", "1e-4", "5e-4", "1e-3", "5e-3", "1e-2"],
    ["1e-3", "96.32", "96.49", "96.40", "96.65", "96.66"],
    ["5e-3", "96.90", "97.00", "96.85", "97.20", "97.34"],
    ["1e-2", "96.87", "97.20", "97.01", "97.40", "97.47"],
    ["5e-2", "97.04", "97.20", "97.43", "97.31", "97.27"],
    ["1e-1", "96.94", "97.38", "97.44", "97.29", "96.73"],
]


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> str:
    """A database with the paper's Tables 1 and 3 imported, one unrun study and one empty."""
    path = tmp_path_factory.mktemp("db") / "r.db"
    url = f"sqlite:///{path}"
    for name in ("paper_table3", "paper_table1"):
        assert main(["import", str(paper_table_path(name)), "--study", name, "--storage", url]) == 0
    configs = [TrialConfig("synthetic", "mlp", "sgd", lr, 0.0) for lr in (0.1, 0.01)]
    store = Store(url)
    store.register_study("waiting", {"name": "waiting"}, "hash-waiting", configs)
    store.register_study("empty", {"name": "empty"}, "hash-empty", [])
    return url


def dump(url: str) -> list[str]:
    """Every row of the database, to prove a failed command changed nothing."""
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return list(conn.iterdump())


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Runs the CLI in-process; argparse's SystemExit becomes an exit code."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code)
    out, err = capsys.readouterr()
    return code, out, err


def test_imported_table3_scores_as_the_paper(db, capsys):
    code, out, _ = run(capsys, "scores", "paper_table3", "--storage", db, "--format", "json")
    assert code == 0
    scores = json.loads(out)
    assert len(scores) == 1
    assert f"{100 * scores[0]['mean']:.2f}" == "97.03"
    assert f"{1e4 * scores[0]['variance']:.2f}" == "0.11"
    code, out, _ = run(capsys, "scores", "paper_table3", "--storage", db)
    assert code == 0
    assert "97.03" in out and "0.11" in out
    assert "diverged cells count at their measured accuracy, or at chance" in out
    assert "95% percentile bootstrap interval, 2000 resamples over grid cells" in out
    assert max(len(line) for line in out.splitlines() if "│" in line) <= 100
    code, out, _ = run(capsys, "scores", "paper_table3", "--storage", db, "--wide")
    assert "E[best@25] %" in out and "tunability %" in out and "var share lr % of SS" in out


@pytest.fixture(scope="module")
def table2(tmp_path_factory) -> str:
    """A database with the paper's Table 2 imported as study t2."""
    url = f"sqlite:///{tmp_path_factory.mktemp('t2') / 't2.db'}"
    for name, study in (("paper_table2", "t2"), ("paper_table3", "t3")):
        path = str(paper_table_path(name))
        assert main(["import", path, "--study", study, "--storage", url]) == 0
    return url


def test_compare_puts_studies_side_by_side_with_performance_profiles(table2, capsys, tmp_path):
    page = tmp_path / "compare.html"
    code, out, _ = run(capsys, "compare", "t2", "t3", "--storage", table2, "--format", "json",
                       "-o", str(page))  # fmt: skip
    assert code == 0
    payload = json.loads(out[out.index("{") :])
    values = {(r["study"], r["optimizer"]): r["value"] for r in payload["scores"]}
    assert f"{100 * values['t3', 'proposed']:.2f}" == "97.03"
    assert values["t2", "adam"] == pytest.approx((0.10 + 0.9506 + 0.9415) / 3)
    profiles = {r["optimizer"]: r for r in payload["profiles"]}
    assert profiles["proposed"]["tau 1"] == 1.0  # the best mean in both studies
    assert profiles["adam"]["tau 1.25"] == 0.0 and profiles["adam"]["tau 1.5"] == 0.5
    assert "Performance profiles" in page.read_text() and "fig-profiles" in page.read_text()
    axes = {(r["study"], r["optimizer"], r["axis"]) for r in payload["axes"]}
    assert ("t3", "proposed", "lr") in axes and ("t3", "proposed", "weight_decay") in axes
    code, out, _ = run(capsys, "compare", "t2", "t3", "--storage", table2)
    assert code == 0 and "97.03 [" in out and "performance profile on mean accuracy" in out
    assert "importance of each axis" in out and "weight_decay" in out


def test_paper_table2_does_not_rank_diverged_adam_robust(table2, capsys):
    """Adam's lr 0.1 cell diverged (no accuracy): counted at chance (10 classes), flagged, and
    Adam ranks last; the proposed optimizer has the smallest lr sensitivity, as the paper says."""
    url = table2
    code, out, _ = run(capsys, "scores", "t2", "--storage", url, "--format", "json")
    scores = {row["optimizer"]: row for row in json.loads(out)}
    assert scores["adam"]["cells"] == 3 and scores["adam"]["diverged_cells"] == 1
    assert scores["adam"]["min"] == pytest.approx(0.10)
    assert scores["adam"]["mean"] == pytest.approx((0.10 + 0.9506 + 0.9415) / 3)
    adaptive = ["adam", "adamw", "radam", "adabelief", "proposed"]
    assert min(adaptive, key=lambda o: scores[o]["lr_sensitivity"]) == "proposed"
    assert min(adaptive, key=lambda o: scores[o]["variance"]) == "proposed"
    code, out, _ = run(capsys, "scores", "t2", "--storage", url)
    verdict = next(line for line in out.splitlines() if line.startswith("Ranked by"))
    assert verdict.startswith("Ranked by mean accuracy (higher is better): 1. proposed")
    assert re.search(r"5\. nag 88\.70% \[[^]]*\], 6\. adam 66\.40% \[[^]]*\]\.$", verdict)
    assert "Smallest lr sensitivity: proposed" in out
    assert "Diverged cells (counted, at chance when nothing was measured): adam 1 of 3." in out
    assert "3 (1 div)" in out


def test_scores_pair_states_the_difference_and_its_interval(table2, capsys):
    url = table2
    code, out, _ = run(capsys, "scores", "t2", "--storage", url, "--pair", "proposed", "nag",
                       "--measure", "mean", "--resamples", "500", "--seed", "3")  # fmt: skip
    assert code == 0
    assert re.fullmatch(
        r"proposed - nag on mean accuracy: \+5\.77 \[[-+]\d+\.\d\d, \+\d+\.\d\d\] "
        r"\(95% bootstrap, 500 resamples\): (not )?separable, the interval (in|ex)cludes 0\n",
        out,
    ), out
    again = run(capsys, "scores", "t2", "--storage", url, "--pair", "proposed", "nag",
                "--measure", "mean", "--resamples", "500", "--seed", "3")[1]  # fmt: skip
    assert again == out  # seeded


def test_table_lr_wd_prints_table3_back_in_the_paper_layout(db, capsys):
    code, out, _ = run(capsys, "table", "paper_table3", "--kind", "lr-wd",
                       "--optimizer", "proposed", "--storage", db, "--format", "csv")  # fmt: skip
    assert code == 0
    assert [line.split(",") for line in out.strip().splitlines()] == TABLE3_LAYOUT
    code, out, _ = run(capsys, "table", "paper_table3", "--optimizer", "proposed", "--storage", db)
    lines = [line for line in out.splitlines() if "│" in line or "┃" in line]
    cells = [[c.strip() for c in line.strip("│┃ ").replace("┃", "│").split("│")] for line in lines]
    assert cells == TABLE3_LAYOUT
    assert "mean 97.03  variance 0.11" in out


def test_variant_table_and_results_of_table1(db, capsys):
    code, out, _ = run(capsys, "table", "paper_table1", "--kind", "variant-optimizer",
                       "--storage", db, "--format", "csv")  # fmt: skip
    assert code == 0 and out.splitlines()[1] == "baseline,93.95"
    code, out, _ = run(capsys, "results", "paper_table1", "--storage", db, "--format", "csv")
    frame = pd.read_csv(io.StringIO(out))
    assert len(frame) == 5 and set(frame["state"]) == {"done"}
    assert frame["final_test_acc"].max() == pytest.approx(0.9573)
    assert {"optimizer", "variant", "lr", "weight_decay", "seed", "diverged", "seconds"} <= set(
        frame.columns
    )
    code, out, _ = run(capsys, "results", "paper_table1", "--variant", "+cutmix",
                       "--storage", db, "--format", "json")  # fmt: skip
    assert [r["variant"] for r in json.loads(out)] == ["+cutmix"]


def test_studies_lists_progress_and_honours_the_environment(db, capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTBENCH_STORAGE", db)
    code, out, _ = run(capsys, "studies", "--format", "json")
    assert code == 0
    by_name = {s["study"]: s for s in json.loads(out)}
    assert by_name["paper_table3"]["done"] == 25 and by_name["paper_table3"]["finished %"] == "100"
    assert by_name["waiting"]["pending"] == 2 and by_name["waiting"]["finished %"] == "0"


def test_load_results_gives_the_same_frame_for_notebooks(db):
    from robustbench_opt.analysis import load_results

    frame = load_results("paper_table3", storage=db)
    assert len(frame) == 25 and frame["final_test_acc"].mean() == pytest.approx(0.970316)


def test_load_results_never_creates_a_database(tmp_path):
    from robustbench_opt.analysis import load_results
    from robustbench_opt.errors import UserError

    path = tmp_path / "absent.db"
    with pytest.raises(UserError, match=f"no results database at {re.escape(str(path))}; run a "
                       "study first, or set the storage URL") as info:  # fmt: skip
        load_results("paper_table3", storage=f"sqlite:///{path}")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_import_records_the_classes_of_the_data_set(capsys, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    table3 = str(paper_table_path("paper_table3"))
    for extra in (["--study", "c100", "--classes", "100"], ["--study", "c10"]):
        assert run(capsys, "import", table3, *extra, "--storage", url)[0] == 0
    store = Store(url, create=False)
    assert store.study_record("c100").spec["num_classes"] == 100
    assert store.study_record("c10").spec["num_classes"] == 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["scores", "paper_tabel3"], "unknown study 'paper_tabel3'; did you mean 'paper_table3'?"),
        (["scores", "waiting"], r"study 'waiting' has no finished cells yet \(2 pending\)"),
        (["table", "empty", "--optimizer", "sgd"], "study 'empty' has no cells yet"),
        (["scores", "paper_table3", "--metric", "val"], "has no validation results"),
        (["table", "paper_table3", "--kind", "lr-wd"], "needs --optimizer NAME; .*has: proposed"),
        (["table", "paper_table3", "--kind", "lr-optimizer"],
         r"several weight_decay values .*\(command line: --weight-decay\)"),
        (["table", "paper_table3", "--optimizer", "propsed"],
         r"set optimizer to one of these \(command line: --optimizer\)"),
        (["report", "nope"], "unknown study 'nope'"),
        (["compare", "paper_table3"], "compare needs two or more studies, got 1"),
        (["compare", "paper_table3", "nope"], "unknown study 'nope'"),
        (["compare", "paper_table3", "paper_table3"], "named twice"),
        (["scores", "paper_table3", "--level", "1.5"], "must be > 0 and < 1, got '1.5'"),
        (["compare", "paper_table3", "paper_table1", "--level", "0"], "must be > 0 and < 1"),
        (["scores", "paper_table3", "--pair", "proposed", "adam"], "unknown optimizer 'adam'"),
        (["scores", "paper_table3", "--pair", "proposed", "proposed"], "not with itself"),
        (["scores", "paper_table3", "--default-cell", "3,0"], "default cell lr 3 is not on"),
        (["import", "MISSING.csv", "--study", "x"], "no such file"),
        (["import", str(paper_table_path("paper_table1")), "--study", "paper_table3"],
         "study 'paper_table3' already exists"),
        (["import", str(paper_table_path("paper_table1")), "--study", "new", "--classes", "0"],
         "--classes: must be >= 1, got '0'"),
    ],
)  # fmt: skip
def test_errors_are_one_line_and_change_nothing(db, capsys, argv, message):
    before = dump(db)
    code, out, err = run(capsys, *argv, "--storage", db)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert dump(db) == before


def test_bad_csv_import_leaves_the_database_unchanged(db, capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("optimizer,lr,weight_decay,test_acc\nadam,0.1,0,95\nadam,0.01,0,ninety\n")
    before = dump(db)
    code, _, err = run(capsys, "import", str(bad), "--study", "fresh", "--storage", db)
    assert code == 2 and "line 3: test_acc 'ninety' is not a finite number" in err
    assert dump(db) == before


def test_report_writes_one_offline_html(db, capsys, tmp_path):
    out_file = tmp_path / "r.html"
    code, out, _ = run(capsys, "report", "paper_table3", "-o", str(out_file), "--storage", db)
    assert code == 0 and "works offline" in out
    page = out_file.read_text()
    assert "<h1>Study paper_table3</h1>" in page and "97.03" in page


def test_empty_database_says_so(tmp_path, capsys):
    url = f"sqlite:///{Path(tmp_path) / 'empty.db'}"
    code, _, err = run(capsys, "studies", "--storage", url)
    assert code == 2 and "no results database at" in err
    assert not (Path(tmp_path) / "empty.db").exists()  # a read does not create a database
    Store(url)
    code, out, _ = run(capsys, "studies", "--storage", url)
    assert code == 0 and "no studies yet" in out
    code, _, err = run(capsys, "scores", "x", "--storage", url)
    assert code == 2 and "holds no studies yet" in err
