"""`robustbench-opt data check DATASET DIR`: whether DIR holds a usable CIFAR copy."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Adds `data check`."""
    data = sub.add_parser(
        "data", help="check local data sets", description="Check local data sets."
    )
    actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="say whether a directory holds a usable CIFAR-10/100 copy and what is missing",
        description=(
            "Say whether DIR holds a usable CIFAR-10/100 copy, in torchvision's layout (DIR holds "
            "cifar-10-batches-py/ or cifar-100-python/) or as the python pickle folder itself, "
            "and what is missing. Exit status 0 when usable, 1 when not."
        ),
    )
    check.add_argument("dataset", help="cifar10 or cifar100")
    check.add_argument("directory", metavar="DIR", help="the directory to check")
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from robustbench_opt.data.cifar_check import check_cifar

    found = check_cifar(args.dataset, args.directory)
    if found.usable:
        print(
            f"{found.dataset}: usable, {found.layout} in {found.folder} ({found.train:,} "
            f"training and {found.test:,} test images); set data_dir: {found.data_dir} in the "
            f"study file, or --data-dir {found.data_dir} for train"
        )
        return 0
    where = f" ({found.layout} in {found.folder})" if found.folder else ""
    print(f"{found.dataset}: not usable in {args.directory}{where}: {'; '.join(found.problems)}")
    return 1
