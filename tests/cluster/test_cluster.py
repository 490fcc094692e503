"""The compose stack for real (tests/cluster/run_cluster.sh); opt-in: ROBUSTBENCH_CLUSTER=1.

It builds a multi-GB image and runs five containers for several minutes, so CI and a plain
`pytest` skip it; it also skips when Docker is not usable (no binary or no running daemon).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("run_cluster.sh")


def docker_usable() -> str | None:
    """Why Docker cannot run the stack here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker binary"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "the Docker daemon is not running"
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if compose.returncode != 0 and shutil.which("docker-compose") is None:
        return "neither `docker compose` nor docker-compose is installed"
    return None


@pytest.mark.slow
def test_compose_stack_runs_studies_exactly_once_through_a_killed_worker() -> None:
    if os.environ.get("ROBUSTBENCH_CLUSTER") != "1":
        pytest.skip("builds images and runs the compose stack: opt in with ROBUSTBENCH_CLUSTER=1")
    reason = docker_usable()
    if reason:
        pytest.skip(f"Docker is not usable: {reason}")
    # Its output is pytest's captured output (shown on failure; live with -s).
    assert subprocess.run(["bash", str(SCRIPT)], timeout=3600).returncode == 0
