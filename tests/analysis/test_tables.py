"""Paper-style table layouts (Tables 1-3) built from the CSVs shipped with the package."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from robustbench_opt.analysis.results_csv import paper_table_path, read_results_csv
from robustbench_opt.analysis.tables import (
    format_hparam,
    lr_optimizer_table,
    lr_wd_table,
    table_rows,
    variant_optimizer_table,
)
from robustbench_opt.errors import UserError

# The seed paper's Table 3 (003_6e7964fb9d7b2f29.txt), as printed there.
PAPER_TABLE3 = """\
lr \\ wd|1e-4|5e-4|1e-3|5e-3|1e-2
1e-3|96.32|96.49|96.40|96.65|96.66
5e-3|96.90|97.00|96.85|97.20|97.34
1e-2|96.87|97.20|97.01|97.40|97.47
5e-2|97.04|97.20|97.43|97.31|97.27
1e-1|96.94|97.38|97.44|97.29|96.73"""


def cells_from(name: str) -> pd.DataFrame:
    """A cells frame as storage returns it, from a shipped paper CSV."""
    rows, unit = read_results_csv(paper_table_path(name))
    assert unit == "percent"
    frame = pd.DataFrame(rows)
    frame["state"] = frame.pop("diverged").map({True: "diverged", False: "done"})
    frame["final_test_acc"] = frame["final_test_acc"].astype(float)
    frame["best_test_acc"] = math.nan
    frame["test_acc_at_best_val"] = math.nan
    return frame


def test_format_hparam_matches_the_paper_notation():
    assert [format_hparam(v) for v in (0.1, 0.05, 0.001, 5e-4, 0.0015, 0, 1.0)] == [
        "1e-1", "5e-2", "1e-3", "5e-4", "1.5e-3", "0", "1e0",
    ]  # fmt: skip


def test_lr_wd_table_reproduces_the_paper_table3_layout_and_summary():
    table = lr_wd_table(cells_from("paper_table3"), "proposed", chance=0.1)
    assert "\n".join("|".join(r) for r in table_rows(table)) == PAPER_TABLE3
    assert table.footer[0].startswith("mean 97.03  variance 0.11  (over 25 cells")


def test_lr_optimizer_table_is_table2_with_diverged_cells_marked():
    table = lr_optimizer_table(cells_from("paper_table2"), chance=0.1)
    rows = table_rows(table)
    assert rows[0] == ["lr", "nag", "adam", "adamw", "radam", "adabelief", "proposed"]
    assert rows[1] == ["1e-3", "78.08", "94.15", "94.26", "94.40", "93.71", "93.86"]
    # Adam's diverged cell is counted at chance (10 classes) and flagged, never dropped.
    assert rows[3] == ["1e-1", "95.73", "10.00 (div)", "88.40", "90.97", "92.86", "93.69"]
    assert table.footer == [
        "(div): a seed diverged; counted at its measured accuracy, or at chance (10.00%) "
        "when none was measured"
    ]


def test_variant_optimizer_table_is_table1_in_study_order():
    rows = table_rows(variant_optimizer_table(cells_from("paper_table1"), chance=0.1))
    assert [r[0] for r in rows] == [
        "variant", "baseline", "+cosine_decay", "+trivialaugment", "+cutmix", "+wd_off",
    ]  # fmt: skip
    assert [r[1] for r in rows[1:]] == ["93.95", "93.99", "94.51", "95.11", "95.73"]


def test_missing_cells_show_a_dash():
    cells = cells_from("paper_table3")
    cells = cells[~((cells["lr"] == 0.1) & (cells["weight_decay"] == 0.01))]
    assert table_rows(lr_wd_table(cells, "proposed", chance=0.1))[-1][-1] == "-"


def test_ambiguous_tables_ask_for_the_missing_setting():
    t3 = cells_from("paper_table3")
    with pytest.raises(UserError, match=r"several weight_decay values .*set weight_decay"):
        lr_optimizer_table(t3, chance=0.1)
    assert table_rows(lr_optimizer_table(t3, weight_decay=1e-3, chance=0.1))[1] == ["1e-3", "96.40"]
    with pytest.raises(UserError, match="unknown weight_decay 0.2"):
        lr_optimizer_table(t3, weight_decay=0.2, chance=0.1)
    with pytest.raises(UserError, match="several lr values"):
        variant_optimizer_table(t3, chance=0.1)
    with pytest.raises(UserError, match="unknown optimizer 'propsed'; did you mean 'proposed'"):
        lr_wd_table(t3, "propsed", chance=0.1)
    two = pd.concat([t3, t3.assign(variant="cutmix")])
    with pytest.raises(UserError, match="several variant values .*set variant to one of them"):
        lr_wd_table(two, "proposed", chance=0.1)
    assert table_rows(lr_wd_table(two, "proposed", variant="cutmix", chance=0.1))[1][1] == "96.32"
