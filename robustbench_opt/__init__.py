"""robustbench-opt: how robust are deep-learning optimizers to their hyperparameters."""

from __future__ import annotations

__version__ = "0.1.0"
