"""What a run of a study would train, computed without writing anything (and without Ray)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from robustbench_opt.config import TrialConfig
from robustbench_opt.errors import UserError
from robustbench_opt.spec import StudySpec, diff_specs, identity
from robustbench_opt.states import FINISHED
from robustbench_opt.storage import Store, spec_hash

# Seconds per epoch on one CPU core when nothing is measured yet (rough; for --dry-run only).
ASSUMED_EPOCH_SECONDS = {"digits": 1.0, "cifar10": 120.0, "cifar100": 120.0}
FALLBACK_EPOCH_SECONDS = 120.0
MAX_DIFF_LINES = 8  # changes named in a refusal


@dataclass
class Plan:
    """A study's cells, their registered states, and those a run would train."""

    study: str
    spec: dict[str, Any]  # StudySpec.to_dict()
    cells: list[TrialConfig]
    states: dict[str, str]  # registered cell id -> state
    to_run: list[TrialConfig]  # neither finished nor claimed by a live run
    busy: int  # cells claimed by another live run
    seconds_per_epoch: float
    measured: bool  # seconds_per_epoch measured in this study (else assumed)

    def count(self, state: str) -> int:
        return sum(1 for s in self.states.values() if s == state)

    @property
    def epochs_to_run(self) -> int:
        return sum(c.recipe.epochs for c in self.to_run)


def make_plan(store: Store | None, spec: StudySpec, study: str) -> Plan:
    """Checks `spec` against what `study` was registered with and lists the cells to train.

    A changed study file under an existing name is a UserError naming the changes. `store`
    None means the database does not exist yet.
    """
    spec_dict = spec.to_dict()
    cells = spec.cells()
    states: dict[str, str] = {}
    seconds = ASSUMED_EPOCH_SECONDS.get(spec.dataset, FALLBACK_EPOCH_SECONDS)
    measured, busy, skip = False, 0, set()
    record = store.study_record(study) if store is not None else None
    if store is not None and record is not None:
        if record.source != "run" or record.spec_hash != spec_hash(spec_dict):
            raise _refusal(store, study, record.spec, spec_dict, record.source)
        frame = store.cells_frame(study)
        states = dict(zip(frame["cell_id"], frame["state"], strict=True))
        stale = set(store.stale_runs(study))
        live = {cid for cid, run in store.claims(study).items() if run not in stale}
        busy = len(live)
        skip = {cid for cid, s in states.items() if s in FINISHED} | live
        epochs = store.epochs_frame(study)
        if not epochs.empty:
            seconds, measured = float(epochs["seconds"].mean()), True
    to_run = [c for c in cells if c.cell_id(study) not in skip]
    return Plan(study, spec_dict, cells, states, to_run, busy, seconds, measured)


def _refusal(
    store: Store, study: str, old: dict[str, Any], new: dict[str, Any], source: str
) -> UserError:
    if source != "run":
        return UserError(
            f"study {study!r} in {store.display_url} was imported, not run; "
            "run this file under another name with --study-name NEW"
        )
    changes = diff_specs(identity(old), identity(new))
    shown = "; ".join(changes[:MAX_DIFF_LINES])
    if len(changes) > MAX_DIFF_LINES:
        shown += f"; ... {len(changes) - MAX_DIFF_LINES} more"
    return UserError(
        f"study {study!r} in {store.display_url} was run from a different study file "
        f"({shown}); restore the file, or start a new study with --study-name NEW"
    )


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `2h10m`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def ray_address(address: str | None) -> str | None:
    """The cluster to join: --address, else $RAY_ADDRESS; None starts a local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_address(address: str) -> None:
    """Fails fast, in one line, when a HOST:PORT address does not answer."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise UserError(
            f"invalid Ray address {address!r}; valid: HOST:PORT, ray://HOST:PORT or auto; "
            "fix --address or $RAY_ADDRESS"
        )
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise UserError(
            f"cannot reach the Ray cluster at {address!r}: {err.strerror or err}; "
            "check --address or $RAY_ADDRESS and that the head node is up"
        ) from None
