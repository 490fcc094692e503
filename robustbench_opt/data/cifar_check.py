"""Whether a directory holds a usable CIFAR-10/100 copy, and what is missing (`data check`).

Two layouts are recognised: torchvision's, where the directory (what `data_dir` names) holds the
extracted archive folder (`cifar-10-batches-py/` or `cifar-100-python/`), and the python pickle
folder itself (the directory is that folder; `data_dir` is then its parent). Each pickle file
must load and hold uint8 rows of 3,072 values (3 x 32 x 32) and one label per row.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100

from robustbench_opt.errors import unknown

# dataset -> (folder in the archive, training files, test files, label key, meta file, archive):
# the files torchvision's readers (`data.readers`) load, named as torchvision names them
LAYOUTS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], str, str, str]] = {
    name: (
        reader.base_folder, tuple(f for f, _ in reader.train_list),
        tuple(f for f, _ in reader.test_list), label_key, reader.meta["filename"], reader.url,
    )
    for name, reader, label_key in (
        ("cifar10", CIFAR10, "labels"), ("cifar100", CIFAR100, "fine_labels")
    )
}  # fmt: skip
ROW = 3 * 32 * 32  # values in one image row


@dataclass
class CifarCheck:
    """What `check_cifar` found."""

    dataset: str
    folder: Path | None  # the pickle folder found, or None
    data_dir: Path | None  # what to set data_dir to when usable
    layout: str = ""  # "torchvision's layout" or "the python pickle folder"
    train: int = 0  # images in the training files that loaded
    test: int = 0
    problems: list[str] = field(default_factory=list)  # missing or unreadable files

    @property
    def usable(self) -> bool:
        return self.folder is not None and not self.problems


def check_cifar(dataset: str, directory: str | Path) -> CifarCheck:
    """Looks for `dataset` in `directory` in either layout and checks every file it needs."""
    if dataset not in LAYOUTS:
        raise unknown("dataset", dataset, LAYOUTS, "data check knows these local data sets")
    name, train_files, test_files, label_key, meta, archive = LAYOUTS[dataset]
    root = Path(directory).expanduser()
    if (root / name).is_dir():
        found = CifarCheck(dataset, root / name, root, "torchvision's layout")
    elif root.name == name and root.is_dir():
        found = CifarCheck(dataset, root, root.parent, "the python pickle folder")
    else:
        tarball = root / archive.rsplit("/", 1)[1]
        hint = f"extract {tarball.name} there" if tarball.is_file() else f"get {archive}"
        problem = f"no {name}/ folder in {root} ({hint})"
        return CifarCheck(dataset, None, None, problems=[problem])
    for files, attr in ((train_files, "train"), (test_files, "test")):
        for file in files:
            count, problem = _rows(found.folder / file, label_key)
            setattr(found, attr, getattr(found, attr) + count)
            if problem:
                found.problems.append(problem)
    if not (found.folder / meta).is_file():
        found.problems.append(f"{meta}: missing")
    return found


def _rows(path: Path, label_key: str) -> tuple[int, str | None]:
    """(images in one pickle file, the problem with it or None)."""
    if not path.is_file():
        return 0, f"{path.name}: missing"
    try:
        with open(path, "rb") as file:
            entry = pickle.load(file, encoding="latin1")
        data = np.asarray(entry["data"])
        labels = entry[label_key]
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, OSError) as err:
        return 0, f"{path.name}: unreadable ({type(err).__name__}: {err})"
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        return 0, f"{path.name}: data is {data.dtype} {data.shape}, not uint8 rows of {ROW}"
    if len(labels) != len(data):
        return 0, f"{path.name}: {len(labels)} labels for {len(data)} images"
    return len(data), None
