"""Our own tables next to Optuna's, in the same database.

Optuna's tables hold the trials users look at (optuna-dashboard); these hold what Optuna cannot
guarantee: one row per grid cell with a unique key, the cell's state and claim, flat result
columns for bulk reads, per-epoch metrics, each cell's point of the study's search space (its
axis values, written once when the study registers it; none for cells stored before spaces:
their axes are lr and weight decay), and the runs that claim cells. The `rbo_results`
view is the stable face of the cell table for users who query with SQL (README: "Querying the
database"). Cell states: `robustbench_opt.states`.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

study = sa.Table(
    "rbo_study",
    metadata,
    sa.Column("name", sa.String(512), primary_key=True),
    sa.Column("source", sa.String(16), nullable=False),  # "run" | "import"
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("spec_hash", sa.String(64), nullable=False),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
)

cell = sa.Table(
    "rbo_cell",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study", sa.String(512), sa.ForeignKey("rbo_study.name"), nullable=False),
    sa.Column("cell_id", sa.String(64), nullable=False),
    sa.Column("optimizer", sa.String(128), nullable=False),  # display label
    sa.Column("variant", sa.String(128), nullable=False),
    sa.Column("lr", sa.Float, nullable=False),
    sa.Column("weight_decay", sa.Float, nullable=False),
    sa.Column("seed", sa.Integer, nullable=False),
    sa.Column("config_json", sa.Text, nullable=False),  # TrialConfig.to_dict(); "{}" if imported
    sa.Column("state", sa.String(16), nullable=False),  # robustbench_opt.states
    sa.Column("claim_run", sa.String(64)),
    sa.Column("optuna_trial_id", sa.Integer),
    sa.Column("final_test_acc", sa.Float),
    sa.Column("best_test_acc", sa.Float),
    sa.Column("best_epoch", sa.Integer),
    sa.Column("test_acc_at_best_val", sa.Float),
    sa.Column("epochs_run", sa.Integer),
    sa.Column("seconds", sa.Float),
    sa.Column("error", sa.Text),
    sa.Column("record_json", sa.Text),  # TrialResult.to_dict() or the failure's traceback
    sa.Column("updated", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("study", "cell_id", name="uq_rbo_cell_study_cell"),
)

epoch = sa.Table(
    "rbo_epoch",
    metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("cell_id", sa.String(64), primary_key=True),
    sa.Column("epoch", sa.Integer, primary_key=True),
    sa.Column("train_loss", sa.Float),
    sa.Column("train_acc", sa.Float),
    sa.Column("test_loss", sa.Float),
    sa.Column("test_acc", sa.Float),
    sa.Column("val_loss", sa.Float),
    sa.Column("val_acc", sa.Float),
    sa.Column("lr", sa.Float),
    sa.Column("seconds", sa.Float),
)

point = sa.Table(
    "rbo_point",
    metadata,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("cell_id", sa.String(64), primary_key=True),
    sa.Column("point", sa.Integer),  # index in a sampled design; NULL on a grid
    sa.Column("workload", sa.String(128)),  # of a multi-workload study; NULL otherwise
    sa.Column("axes_json", sa.Text, nullable=False),  # {axis: value}, written once
)

run = sa.Table(
    "rbo_run",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("study", sa.String(512), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended", sa.DateTime(timezone=True)),
)

RESULTS_VIEW = "rbo_results"
RESULTS_VIEW_COLUMNS: tuple[str, ...] = (
    "study", "optimizer", "variant", "lr", "weight_decay", "seed", "state", "final_test_acc",
    "best_test_acc", "best_epoch", "test_acc_at_best_val", "epochs_run", "seconds", "error",
    "cell_id",
)  # fmt: skip
RESULTS_VIEW_SELECT = f"SELECT {', '.join(RESULTS_VIEW_COLUMNS)} FROM rbo_cell"
