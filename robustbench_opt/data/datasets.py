"""Loading the supported data sets into `DataSplits`: digits (bundled) and CIFAR-10/100 (local)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torchvision.datasets import CIFAR10, CIFAR100

from robustbench_opt.data.splits import DataSplits, channel_stats, stratified_holdout
from robustbench_opt.errors import UserError, unknown

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100")
DEFAULT_DATA_DIR = "~/.cache/robustbench-opt/data"  # CIFAR files when data_dir is None
DIGITS_TEST_FRACTION = 0.2  # digits: stratified share of the 1797 images used as test split
SPLIT_SEED = 0  # fixed seed of the digits test split and of every validation holdout

Arrays = tuple[Tensor, Tensor, Tensor, Tensor, int]  # train_x, train_y, test_x, test_y, classes


class _CIFAR10Files(CIFAR10):
    """torchvision's CIFAR-10 reader; the files must exist (their archive's md5 is checked on
    download), so a copy written by hand or a test fixture in the same format loads too."""

    train_list = [[name, None] for name, _ in CIFAR10.train_list]
    test_list = [[name, None] for name, _ in CIFAR10.test_list]
    meta = {**CIFAR10.meta, "md5": None}


class _CIFAR100Files(CIFAR100):
    """As `_CIFAR10Files`, for CIFAR-100 (fine labels)."""

    train_list = [[name, None] for name, _ in CIFAR100.train_list]
    test_list = [[name, None] for name, _ in CIFAR100.test_list]
    meta = {**CIFAR100.meta, "md5": None}


_CIFAR_READERS: dict[str, tuple[type[CIFAR10], str]] = {
    "cifar10": (_CIFAR10Files, "CIFAR-10"),
    "cifar100": (_CIFAR100Files, "CIFAR-100"),
}


def load_splits(
    dataset: str,
    data_dir: str | None = None,
    download: bool = False,
    val_fraction: float = 0.0,
    seed: int = SPLIT_SEED,
) -> DataSplits:
    """Loads `dataset` into memory as uint8 NCHW tensors with fixed, stratified splits.

    `seed` draws the digits test split and the validation holdout; keep it fixed (the default)
    so that every trial seed of a study sees the same images, and vary the trial seed elsewhere.
    """
    if dataset not in DATASETS:
        raise unknown("dataset", dataset, DATASETS, "set the dataset to one of these")
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0):
        raise UserError(
            f"val_fraction {val_fraction!r} is outside [0, 1); use e.g. 0.1 to hold out 10% "
            "of the training split, or 0 for none"
        )
    if dataset == "digits":
        train_x, train_y, test_x, test_y, classes = _digits(seed)
    else:
        train_x, train_y, test_x, test_y, classes = _cifar(dataset, data_dir, download)
    val_x = val_y = None
    if val_fraction > 0:
        kept, held = stratified_holdout(train_y, val_fraction, seed)
        if len(held) == 0 or len(kept) == 0:
            raise UserError(
                f"val_fraction {val_fraction} holds out {len(held)} of {len(train_y)} "
                f"training images of {dataset!r}; choose a value that leaves both parts non-empty"
            )
        val_x, val_y = train_x[held], train_y[held]
        train_x, train_y = train_x[kept], train_y[kept]
    mean, std = channel_stats(train_x)
    return DataSplits(
        name=dataset,
        num_classes=classes,
        in_channels=train_x.shape[1],
        image_size=train_x.shape[-1],
        mean=mean,
        std=std,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        val_x=val_x,
        val_y=val_y,
    )


def _digits(seed: int) -> Arrays:
    """scikit-learn's bundled 8x8 digits (values 0..16 scaled to 0..255), split 80/20."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    x = torch.from_numpy(images).unsqueeze(1).contiguous()  # [1797, 1, 8, 8]
    y = torch.from_numpy(bunch.target).to(torch.int64)
    train, test = stratified_holdout(y, DIGITS_TEST_FRACTION, seed)
    return x[train], y[train], x[test], y[test], 10


def check_data(dataset: str, data_dir: str | None = None, download: bool = False) -> None:
    """Fails (UserError) as `load_splits` would on missing files, without reading any data.

    Cheap enough for a preflight before a study writes anything.
    """
    if dataset not in DATASETS:
        raise unknown("dataset", dataset, DATASETS, "set the dataset to one of these")
    if dataset != "digits" and not download:
        _cifar_root(dataset, data_dir)


def _cifar_root(dataset: str, data_dir: str | None) -> Path:
    """The CIFAR directory; UserError naming the first missing file when it is incomplete."""
    reader, title = _CIFAR_READERS[dataset]
    root = Path(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    folder = root / reader.base_folder
    files = [name for name, _ in reader.train_list + reader.test_list] + [reader.meta["filename"]]
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise UserError(
            f"no {title} files in {str(root)!r} (expected {folder}/{missing[0]}, torchvision's "
            "format); set download to true to fetch them, or point data_dir at a directory "
            "that has them",
            ("download", "data_dir"),
        )
    return root


def _cifar(dataset: str, data_dir: str | None, download: bool) -> Arrays:
    """CIFAR-10/100 from torchvision's on-disk format under `data_dir`."""
    reader, title = _CIFAR_READERS[dataset]
    if not download:
        _cifar_root(dataset, data_dir)
    root = Path(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
    folder = root / reader.base_folder
    try:
        train = reader(str(root), train=True, download=download)
        test = reader(str(root), train=False, download=False)
    except (OSError, RuntimeError) as err:
        raise UserError(
            f"could not get {title} into {str(root)!r}: {_one_line(err)}; check the network, "
            "or put torchvision's files there by hand"
        ) from err
    except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
        raise UserError(
            f"the {title} files in {str(folder)!r} are unreadable ({type(err).__name__}); delete "
            "that folder and set download to true to fetch them again",
            ("download",),
        ) from err
    return (*_tensors(train), *_tensors(test), len(train.classes))


def _tensors(split: CIFAR10) -> tuple[Tensor, Tensor]:
    """torchvision's HWC numpy array and label list as uint8 NCHW and int64 tensors."""
    x = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(split.targets, dtype=torch.int64)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."
