"""`robustbench-opt bench`: our data path against a plain DataLoader loop, same run, same device."""

from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from robustbench_opt.cli.argtypes import positive_int
from robustbench_opt.cli.train import add_trial_arguments, trial_config_from_args
from robustbench_opt.errors import UserError

BENCH_EPOCHS = 3  # timed epochs per path unless --epochs says otherwise


def register(sub: argparse._SubParsersAction) -> None:
    """Adds the `bench` subcommand."""
    bench = sub.add_parser(
        "bench",
        help="time a trial configuration: device-resident data vs a plain DataLoader loop",
        description=(
            "Train the same model, optimizer, batch size and augmentation two ways on the "
            "current device: a plain torchvision DataLoader + eager loop, and our path "
            "(data on the device, batched augmentation, the recipe's speed options). Timed "
            "epochs alternate between the two. Prints images/s, s/epoch (median), peak "
            "memory and the ratio. With --pack K: K grid cells one after another against the "
            "same K cells packed into one process with one fused forward/backward."
        ),
        allow_abbrev=False,
    )
    add_trial_arguments(bench)
    bench.set_defaults(epochs=BENCH_EPOCHS, func=run_bench)
    bench.add_argument(
        "--warmup",
        type=positive_int,
        default=1,
        metavar="EPOCHS",
        help="untimed epochs per path (>= 1)",
    )
    bench.add_argument(
        "--pack",
        type=positive_int,
        metavar="K",
        help="time K grid cells (lr x 1, 2, 0.5 in turn, seeds --seed + i) one after another "
        "against the same K cells packed (one fused forward/backward)",
    )
    bench.add_argument(
        "--synthetic",
        type=positive_int,
        metavar="IMAGES",
        help="with --pack: train on IMAGES random CIFAR-shaped images made in memory "
        "(no download) instead of --dataset",
    )
    bench.add_argument("--json", action="store_true", help="print the records as JSON only")
    # --epochs (from the trial options) is the number of timed epochs per path here.


def run_bench(args: argparse.Namespace) -> int:
    """Runs both paths and prints a table (or JSON records)."""
    from robustbench_opt import bench  # torch import only when benchmarking

    config = trial_config_from_args(args)
    epochs = config.recipe.epochs
    if args.synthetic is not None and args.pack is None:
        raise UserError("--synthetic only applies with --pack K; add --pack or drop --synthetic")
    if args.pack is None:
        records = bench.bench(config, epochs=epochs, warmup=args.warmup)
    else:
        splits = None if args.synthetic is None else bench.synthetic_splits(args.synthetic)
        records = bench.bench_pack(config, args.pack, epochs, args.warmup, splits)
    if args.json:
        print(json.dumps([r.to_dict() for r in records]))
        return 0
    first = records[0]
    data = "synthetic CIFAR-shaped" if args.synthetic else config.dataset
    cells = f", {args.pack} cells" if args.pack else ""
    table = Table(
        title=f"bench: {data} / {config.model} / {config.optimizer}{cells}, "
        f"batch {config.recipe.batch_size}, augment {','.join(config.recipe.augment) or 'none'}"
        f"{f', cutmix {config.recipe.cutmix_prob:g}' if config.recipe.cutmix_prob else ''}",
        caption=f"{first.device}; median of {first.epochs} timed epochs after "
        f"{first.warmup_epochs} warmup; memory = {first.memory_kind}",
    )
    for column in ("path", "images/s", "s/epoch", "peak memory", "ratio", "workers", "options"):
        table.add_column(column, justify="left" if column in ("path", "options") else "right")
    for r in records:
        on = [
            f"{name}={value}" if isinstance(value, int) and value is not True else name
            for name, value in r.options.items()
            if value
        ] or ["eager"]
        table.add_row(
            r.path,
            f"{r.images_per_s:,.0f}",
            f"{r.seconds_per_epoch:.3f}",
            f"{r.peak_memory_bytes / 2**20:,.1f} MiB",
            f"{r.speedup:.2f}x",
            str(r.workers),
            ",".join(on),
        )
    Console(soft_wrap=True).print(table)
    return 0
