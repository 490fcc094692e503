"""`robustbench-opt check-job STUDY.yaml`: a batch job's checks before it starts Ray."""

from __future__ import annotations

import argparse
import os

from robustbench_opt.cli.argtypes import positive_int
from robustbench_opt.errors import UserError

NODES_VAR = "SLURM_JOB_NUM_NODES"  # set by Slurm in a batch job
ARRAY_VAR = "SLURM_ARRAY_JOB_ID"  # set in each task of a job array


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the `check-job` subcommand."""
    p = sub.add_parser(
        "check-job",
        help="in a batch job, before Ray starts: the study file and the storage work from here",
        description=(
            "Run on a job's first node (docker/slurm/robustbench.sbatch does): the study file "
            "is readable there, and the storage is one the study's jobs can share: a database "
            "server this node reaches (not the loopback address in a multi-node job or a job "
            "array), or SQLite on this node's local disk in a one-node job. Reads only; exit 2 "
            "with one line if not."
        ),
        allow_abbrev=False,
    )
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.add_argument(
        "--storage",
        help="database URL (default: $ROBUSTBENCH_STORAGE, else sqlite:///storage/robustbench.db)",
    )
    p.add_argument(
        "--nodes", type=positive_int, help=f"nodes in the job (default: ${NODES_VAR}, else 1)"
    )
    p.set_defaults(func=cmd_check_job)


def cmd_check_job(args: argparse.Namespace) -> int:
    import socket

    from robustbench_opt.jobcheck import Job, check_job
    from robustbench_opt.storage import resolve_url

    job = Job(socket.gethostname(), args.nodes or job_nodes(), ARRAY_VAR in os.environ)
    print(check_job(args.study_file, resolve_url(args.storage), job))
    return 0


def job_nodes() -> int:
    """The job's node count from Slurm's environment; 1 outside a job."""
    text = os.environ.get(NODES_VAR, "1")
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"${NODES_VAR}={text!r} is not a node count; pass --nodes N")
    return int(text)
