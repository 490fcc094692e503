"""Per-trial results of a study as one DataFrame (for the CLI and for notebooks)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from robustbench_opt.analysis.study import load_study
from robustbench_opt.errors import unknown
from robustbench_opt.states import DIVERGED, STATES

RESULT_COLUMNS = [
    "optimizer", "variant", "lr", "weight_decay", "seed", "state", "diverged", "final_test_acc",
    "best_test_acc", "best_epoch", "test_acc_at_best_val", "epochs_run", "seconds", "error",
    "cell_id",
]  # fmt: skip


def results_frame(
    cells: pd.DataFrame,
    optimizers: Sequence[str] = (),
    variants: Sequence[str] = (),
    states: Sequence[str] = (),
) -> pd.DataFrame:
    """Cells with a `diverged` column, filtered (empty filter = all), in grid order."""
    out = cells.assign(diverged=cells["state"].eq(DIVERGED))
    for column, wanted in (("optimizer", optimizers), ("variant", variants), ("state", states)):
        choices = STATES if column == "state" else out[column].unique().tolist()
        for value in wanted:
            if value not in choices:
                raise unknown(column, value, choices, f"keep only {column}s of these", (column,))
        if wanted:
            out = out[out[column].isin(wanted)]
    order = ["optimizer", "variant", "lr", "weight_decay", "seed"]
    return out.sort_values(order, kind="stable")[RESULT_COLUMNS].reset_index(drop=True)


def load_results(
    study: str,
    storage: str | None = None,
    optimizers: Sequence[str] = (),
    variants: Sequence[str] = (),
    states: Sequence[str] = (),
) -> pd.DataFrame:
    """Every trial of `study` (one row per grid cell x seed); accuracies are fractions.

    `storage` is a database URL; None means $ROBUSTBENCH_STORAGE, else the default SQLite file.
    Reading never creates a database: a SQLite file that does not exist is a UserError.
    """
    from robustbench_opt.storage import Store, resolve_url

    with Store(resolve_url(storage), create=False) as store:
        loaded = load_study(store, study)
    return results_frame(loaded.cells, optimizers, variants, states)
