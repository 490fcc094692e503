"""Command line: parses arguments and delegates. Each command group lives in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import NoReturn

from robustbench_opt.errors import UserError

# Each module defines register(subparsers); a subcommand sets `func(args) -> int`.
COMMAND_MODULES = ("train", "study", "results", "bench")


class Parser(argparse.ArgumentParser):
    """Reports bad arguments as one `error: ...` line on stderr (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = Parser(
        prog="robustbench-opt",
        description="Measure how robust optimizers are to their hyperparameters.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    for name in COMMAND_MODULES:
        importlib.import_module(f"robustbench_opt.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.getLogger("optuna").setLevel(logging.WARNING)  # no "A new study created" lines
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
