"""`robustbench-opt train` (one trial, with progress) and `optimizers` (the registry table).

`add_trial_arguments` and `trial_config_from_args` are shared with commands that take the same
trial options (e.g. `bench`).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from robustbench_opt.cli.argtypes import add_rule_flags, number
from robustbench_opt.config import RECIPE_RULES, EpochRecord, Recipe, TrialConfig
from robustbench_opt.errors import UserError
from robustbench_opt.tunables import KNOWN


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the `train` and `optimizers` subcommands."""
    train = sub.add_parser(
        "train",
        help="train one trial and print its per-epoch metrics",
        description="Train one model with one optimizer and recipe; print metrics per epoch.",
        allow_abbrev=False,
    )
    add_trial_arguments(train)
    train.add_argument(
        "--json", action="store_true", help="print the TrialResult as JSON on stdout, nothing else"
    )
    train.set_defaults(func=run_train)

    optimizers = sub.add_parser(
        "optimizers",
        help="list the optimizers and how each applies weight decay",
        description=(
            "List every optimizer that can run a trial, with its aliases, weight-decay mode and "
            "reference (zoo classes that need a closure, such as L-BFGS, are left out)."
        ),
        allow_abbrev=False,
    )
    optimizers.set_defaults(func=run_optimizers)


def _keyword(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE such as rho=0.05 or betas=[0.9,0.99], got {text!r}"
        )
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"value of {key!r} is not a YAML value: {raw!r}") from None


TABLE_WIDTH = 100  # columns of the `optimizers` table, at most
DEFAULT = " (default: %(default)s)"  # argparse fills in the parser's default


def add_trial_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that define one trial (shared by `train` and `bench`): the cell's own, and a
    flag per recipe field made from `config.RECIPE_RULES` under the study file's names."""
    add = parser.add_argument
    add(
        "--dataset",
        default="digits",
        help="digits, mnist5k, mnist1d (embedded), cifar10 or cifar100" + DEFAULT,
    )
    add(
        "--model",
        default="simple_cnn",
        help="model name, e.g. simple_cnn, mlp, cnn1d (for mnist1d), resnet20" + DEFAULT,
    )
    add(
        "--optimizer",
        default="adam",
        help="optimizer name (see `robustbench-opt optimizers`)" + DEFAULT,
    )
    add("--lr", type=number(float, gt=0), default=1e-3, help="learning rate (> 0)" + DEFAULT)
    add(
        "--weight-decay",
        type=number(float, ge=0),
        default=0.0,
        help="weight decay (>= 0)" + DEFAULT,
    )
    add("--seed", type=int, default=0, help="seeds init, shuffling, augmentation" + DEFAULT)
    add(
        "--opt",
        type=_keyword,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="optimizer keyword, YAML value; repeatable (--opt base=adam --opt rho=0.05)",
    )
    for name in KNOWN:  # the search axes over optimizer keywords, as flags
        add(
            f"--{name.replace('_', '-')}",
            type=number(float),
            metavar="X",
            help=f"optimizer hyperparameter {name}, in {_range(name)}, for an optimizer that "
            "has it (see `robustbench-opt optimizers`; default: the optimizer's own)",
        )
    add_rule_flags(parser, RECIPE_RULES)
    add(
        "--val-fraction",
        type=number(float, ge=0, lt=1),
        default=0.0,
        help="share of the training split held out for validation" + DEFAULT,
    )
    add("--data-dir", help="CIFAR: directory holding cifar-10-batches-py (default: data/)")
    add("--download", action="store_true", help="CIFAR: download into --data-dir if missing")
    add("--device", help="auto (default), cpu, cuda, cuda:N or mps")


def trial_config_from_args(args: argparse.Namespace) -> TrialConfig:
    """The TrialConfig the parsed trial options describe."""
    kwargs: dict[str, Any] = {}
    for key, value in args.opt:
        if key in kwargs:
            raise UserError(f"optimizer keyword {key!r} given twice with --opt; give it once")
        kwargs[key] = value
    values = {name: getattr(args, name) for name in KNOWN if getattr(args, name) is not None}
    if values:
        kwargs = _with_axes(args.optimizer, kwargs, values)
    return TrialConfig(
        dataset=args.dataset,
        model=args.model,
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        recipe=Recipe(**{name: getattr(args, name) for name in RECIPE_RULES}),
        optimizer_kwargs=kwargs,
        seed=args.seed,
        data_dir=args.data_dir,
        download=args.download,
        val_fraction=args.val_fraction,
        device=args.device,
    )


def _range(name: str) -> str:
    low, high, low_open, high_open = KNOWN[name]
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _with_axes(optimizer: str, kwargs: dict[str, Any], values: dict[str, float]) -> dict[str, Any]:
    """`kwargs` with the hyperparameter flags set, each checked against what `optimizer` has
    (imports the registry: only when such a flag is given)."""
    from robustbench_opt.optim.hyperparams import (
        apply_values,
        entry_defaults,
        hyperparameters,
        lacking,
    )

    hyper = hyperparameters(optimizer, kwargs)
    for name, value in values.items():
        flag = f"--{name.replace('_', '-')}"
        if name not in hyper:
            raise UserError(f"{flag}: {lacking(optimizer, name, hyper)}")
        if hyper[name].keyword in kwargs:
            raise UserError(f"{flag} and --opt {hyper[name].keyword}=... both set {name}; give one")
        if not hyper[name].admits(value):
            raise UserError(f"{flag} {value:g}: must be in {hyper[name].range_text()}; fix it")
    return apply_values(hyper, kwargs, values, entry_defaults(optimizer, kwargs))


def format_epoch(record: EpochRecord, epochs: int) -> str:
    """One readable line per epoch."""
    line = (
        f"epoch {record.epoch:>3}/{epochs}  lr {record.lr:.3g}  "
        f"train loss {_loss(record.train_loss)} acc {record.train_acc:.4f}  "
        f"test loss {_loss(record.test_loss)} acc {record.test_acc:.4f}"
    )
    if record.val_loss is not None and record.val_acc is not None:
        line += f"  val loss {_loss(record.val_loss)} acc {record.val_acc:.4f}"
    return line + f"  {record.seconds:.1f}s"


def _loss(value: float) -> str:
    """4 decimals, or scientific notation for a loss that blew up."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3e}"


def run_train(args: argparse.Namespace) -> int:
    """Runs one trial with a progress bar on stderr; prints epochs and a summary (or JSON)."""
    from robustbench_opt.trial.engine import run_trial  # torch import only when training

    config = trial_config_from_args(args)
    err = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
    out = err if args.json else Console(markup=False, highlight=False, soft_wrap=True)
    # Epoch lines go above a live bar when both share a terminal; otherwise to `out`.
    lines = err if err.is_terminal and (args.json or out.is_terminal) else out
    progress = Progress(
        TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    task = progress.add_task("train", total=None, epoch=0, epochs=config.recipe.epochs)
    shown = {"epochs": config.recipe.epochs}

    def on_batch(epoch: int, epochs: int, batch: int, batches: int | None) -> None:
        shown["epochs"] = epochs
        if batch == 1:
            progress.start()
            progress.reset(task, total=batches, epoch=epoch, epochs=epochs)
        progress.update(task, completed=batch)

    def on_epoch(record: EpochRecord) -> None:
        lines.print(format_epoch(record, shown["epochs"]))

    try:
        result = run_trial(config, on_epoch=on_epoch, on_batch=on_batch)
    finally:
        progress.stop()
    if args.json:
        print(json.dumps(_finite_or_null(result.to_dict()), allow_nan=False))
        return 0
    best = f"best test acc {result.best_test_acc:.4f} (epoch {result.best_epoch})"
    if result.test_acc_at_best_val is not None:
        best += f"; test acc at best val {result.test_acc_at_best_val:.4f}"
        best += f" (epoch {result.best_val_epoch})"
    out.print(
        f"{result.status}: final test acc {result.final_test_acc:.4f} "
        f"(epoch {result.epochs[-1].epoch}); {best}; wall time {result.wall_seconds:.1f}s"
    )
    if result.diverged_reason:
        out.print(f"reason: {result.diverged_reason}")
    for note in result.notes:
        out.print(f"note: {note}")
    return 0


def run_optimizers(args: argparse.Namespace) -> int:
    """Prints the optimizer registry as a table at most `TABLE_WIDTH` columns wide; references
    fold onto further lines instead of being cut."""
    from robustbench_opt.optim import list_optimizers

    terminal = Console()
    width = min(terminal.width, TABLE_WIDTH) if terminal.is_terminal else TABLE_WIDTH
    console = Console(width=width)
    table = Table(title="optimizers (use --optimizer NAME or an alias)")
    for column in ("name", "aliases", "wd mode", "2-pass"):
        table.add_column(column, no_wrap=True)
    table.add_column("reference", overflow="fold", ratio=1)
    for info in list_optimizers():
        table.add_row(
            info.name,
            ", ".join(info.aliases),
            info.weight_decay_mode,
            "yes" if info.two_pass else "no",
            info.reference,
        )
    console.print(table)
    return 0


def _finite_or_null(value: Any) -> Any:
    """Non-finite floats (a diverged loss) become null, so the output is standard JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite_or_null(v) for v in value]
    return value
