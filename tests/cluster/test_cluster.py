"""The cluster tests for real; opt-in: ROBUSTBENCH_CLUSTER=1.

tests/cluster/run_cluster.sh runs the compose stack, tests/cluster/run_slurm.sh a Slurm cluster
(slurmctld, two slurmd) in containers. Each builds multi-GB images and runs for several minutes,
so CI and a plain `pytest` skip them; they also skip when Docker is not usable (no binary or no
running daemon). Run one with `-k compose` or `-k slurm`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def docker_usable(compose: bool) -> str | None:
    """Why Docker (and, with `compose`, a compose command) cannot run here, or None."""
    if shutil.which("docker") is None:
        return "no docker binary"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "the Docker daemon is not running"
    if compose:
        found = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if found.returncode != 0 and shutil.which("docker-compose") is None:
            return "neither `docker compose` nor docker-compose is installed"
    return None


def run_opt_in(script: str, compose: bool) -> None:
    if os.environ.get("ROBUSTBENCH_CLUSTER") != "1":
        pytest.skip(
            "builds images and runs a cluster in containers: opt in with ROBUSTBENCH_CLUSTER=1"
        )
    reason = docker_usable(compose)
    if reason:
        pytest.skip(f"Docker is not usable: {reason}")
    # Its output is pytest's captured output (shown on failure; live with -s).
    assert subprocess.run(["bash", str(HERE / script)], timeout=3600).returncode == 0


@pytest.mark.slow
def test_compose_stack_runs_studies_exactly_once_through_a_killed_worker() -> None:
    run_opt_in("run_cluster.sh", compose=True)


@pytest.mark.slow
def test_slurm_jobs_run_studies_exactly_once_through_scancel_and_resubmit() -> None:
    run_opt_in("run_slurm.sh", compose=False)
