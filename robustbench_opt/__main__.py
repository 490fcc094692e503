from __future__ import annotations

import sys

from robustbench_opt.cli import main

sys.exit(main())
