"""Command line: parses arguments and delegates. Each command group lives in its own module."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from typing import NoReturn

from robustbench_opt.errors import UserError

# Each module defines register(subparsers); a subcommand sets `func(args) -> int`.
COMMAND_MODULES = ("train", "study", "results", "bench", "jobcheck", "data")
# Commands whose module is known: only that module is imported (the others import pandas,
# SQLAlchemy, Optuna); any other argument line (--help, a typo, the results commands) builds all.
COMMAND_MODULE = {
    "train": "train",
    "optimizers": "train",
    "run": "study",
    "status": "study",
    "bench": "bench",
    "check-job": "jobcheck",
    "data": "data",
}


class Parser(argparse.ArgumentParser):
    """Reports bad arguments as one `error: ...` line on stderr (no usage block), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for every command, or only for `command`'s module when it is known."""
    import importlib

    parser = Parser(
        prog="robustbench-opt",
        description="Measure how robust optimizers are to their hyperparameters.",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    modules = [COMMAND_MODULE[command]] if command in COMMAND_MODULE else COMMAND_MODULES
    for name in modules:
        importlib.import_module(f"robustbench_opt.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    logging.getLogger("optuna").setLevel(logging.WARNING)  # no "A new study created" lines
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        # Library errors name settings; add the flags this command has for them.
        flags = [f"--{name.replace('_', '-')}" for name in err.settings if hasattr(args, name)]
        hint = f" (command line: {', '.join(flags)})" if flags else ""
        print(f"error: {err}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def entry() -> None:
    """The program (`robustbench-opt`, `python -m robustbench_opt`): `main`, then exit."""
    code = main()
    # Python's teardown would collect every object of torch, Ray and pandas one by one: seconds
    # after an interrupted run had already said what it did. Frozen objects are left to the OS.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
