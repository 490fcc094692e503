"""Reading results CSVs: units, optional columns, and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustbench_opt.analysis.results_csv import paper_table_path, read_results_csv
from robustbench_opt.errors import UserError

H = "optimizer,lr,weight_decay,test_acc\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.csv"
    path.write_text(text)
    return path


def test_percent_is_detected_and_converted(tmp_path):
    rows, unit = read_results_csv(write(tmp_path, H + "a,0.1,0,95.5\n"))
    assert unit == "percent"
    assert rows == [
        {"optimizer": "a", "variant": "default", "lr": 0.1, "weight_decay": 0.0, "seed": 0,
         "final_test_acc": pytest.approx(0.955, abs=1e-15), "diverged": False}
    ]  # fmt: skip


def test_fractions_stay_fractions_and_optional_columns_are_read(tmp_path):
    text = (
        "optimizer,variant,lr,weight_decay,seed,diverged,test_acc,best_test_acc,epochs\n"
        "a,v1,1e-2,5e-4,3,no,0.91,0.93,50\n"
        "a,v1,1e-1,5e-4,3,yes,,,7\n"
    )
    rows, unit = read_results_csv(write(tmp_path, text))
    assert unit == "fraction"
    assert rows[0]["final_test_acc"] == 0.91 and rows[0]["best_test_acc"] == 0.93
    assert (rows[0]["variant"], rows[0]["seed"], rows[0]["epochs"]) == ("v1", 3, 50)
    assert rows[1]["diverged"] is True and rows[1]["final_test_acc"] is None


def test_forced_unit_is_checked(tmp_path):
    path = write(tmp_path, H + "a,0.1,0,0.9\n")
    rows, _ = read_results_csv(path, "percent")
    assert rows[0]["final_test_acc"] == pytest.approx(0.009)
    bad = write(tmp_path, H + "a,0.1,0,90\n")
    with pytest.raises(UserError, match=r"test_acc .90. is outside 0..1 .*set acc_unit to percent"):
        read_results_csv(bad, "fraction")


def test_paper_table3_ships_with_the_package():
    rows, unit = read_results_csv(paper_table_path("paper_table3"))
    assert unit == "percent" and len(rows) == 25
    assert {r["optimizer"] for r in rows} == {"proposed"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer,lr,weight_decay\na,0.1,0\n", r"lacks column\(s\) test_acc; required"),
        ("optimizer,lr,weight_decay,tets_acc\n", r"unknown .*'tets_acc'; did you mean 'test_acc'"),
        (H, "has a header but no rows"),
        (H + "a,fast,0,90\n", r"line 2: lr 'fast' is not a finite number"),
        (H + "a,0.1,0,90\na,0.1,0,nan\n", r"line 3: test_acc 'nan'"),
        (H + "a,-1,0,90\n", r"line 2: lr '-1' must be > 0"),
        (H + "a,0.1,0,\n", r"line 2: empty test_acc .*diverged=true"),
        (H + "a,0.1,0,90\na,0.1,0,91\n", "line 3 repeats line 2"),
        (H[:-1] + ",diverged\na,0.1,0,90,maybe\n", "'maybe' is not true/false"),
        (H + "a,0.1,0,190\n", r"'190' is outside 0..100 \(read as percent\)"),
        (H + '"a,0.1,0,90\n', "cannot read .* as CSV"),
        ("optimizer,lr,lr,test_acc\n", "column 'lr' more than once"),
        (H[:-1] + ",seed\na,0.1,0,90,1.5\n", "seed '1.5' must be a whole"),
    ],
)  # fmt: skip
def test_bad_files_are_one_line_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message) as err:
        read_results_csv(write(tmp_path, text))
    assert "\n" not in str(err.value)


def test_missing_and_binary_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_results_csv(tmp_path / "nope.csv")
    path = tmp_path / "b.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage\x00\n\xff")
    with pytest.raises(UserError, match="cannot read|lacks column|unknown column"):
        read_results_csv(path)
