from __future__ import annotations

from robustbench_opt.cli import entry

entry()
