"""What code and packages a trial ran with."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from functools import cache, partial
from pathlib import Path

import torch

from robustbench_opt import __version__

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the robustbench_opt package


def package_versions() -> dict[str, str]:
    """Versions of python and the packages a trial's numbers depend on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": importlib.metadata.version("torchvision"),  # not imported: ~1 s
        "pytorch-optimizer": importlib.metadata.version("pytorch-optimizer"),
        "robustbench-opt": __version__,
        "robustbench-opt-code": code_identity(),
    }


@cache
def code_identity(package_dir: Path = PACKAGE_DIR) -> str:
    """What code ran: `git COMMIT` (`+dirty` when the package's files differ from it) when the
    package is a git checkout's tracked files, else `sha256 DIGEST` of its .py files."""
    git = partial(subprocess.run, cwd=package_dir, capture_output=True, text=True, timeout=30)
    try:
        tracked = git(["git", "ls-files", "--error-unmatch", "__init__.py"]).returncode == 0
        commit = git(["git", "rev-parse", "HEAD"]).stdout.strip() if tracked else ""
        changed = git(["git", "status", "--porcelain", "--", "."]).stdout.strip() if commit else ""
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        commit = changed = ""
    if commit:
        return f"git {commit}" + ("+dirty" if changed else "")
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"sha256 {digest.hexdigest()}"
