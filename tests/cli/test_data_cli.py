"""`data check`: usable CIFAR copies in both layouts, and what it says is missing or broken."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from robustbench_opt.cli import main
from robustbench_opt.data import load_splits

TEN = ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
       "labels", "batches.meta")  # fmt: skip
HUNDRED = ("cifar-100-python", ["train", "test"], "fine_labels", "meta")


def write(root: Path, layout: tuple, rows: int = 3) -> Path:
    """A tiny copy in the archive's pickle format: `rows` random images per file."""
    folder, files, label_key, meta = layout
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True)
    for name in files:
        entry = {"data": rng.integers(0, 256, (rows, 3072), dtype=np.uint8),
                 label_key: [int(v) for v in rng.integers(0, 10, rows)]}  # fmt: skip
        (root / folder / name).write_bytes(pickle.dumps(entry))
    (root / folder / meta).write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    return root / folder


def check(capsys, *args: str) -> tuple[int, str]:
    code = main(["data", "check", *args])
    out = capsys.readouterr().out.strip()
    assert "\n" not in out
    return code, out


def test_torchvision_layout_is_usable_and_loads_from_the_data_dir_it_names(tmp_path, capsys):
    write(tmp_path, TEN)
    code, out = check(capsys, "cifar10", str(tmp_path))
    assert code == 0
    assert out.startswith("cifar10: usable, torchvision's layout in ")
    assert "15 training and 3 test images" in out and f"data_dir: {tmp_path} " in out
    assert len(load_splits("cifar10", str(tmp_path)).train_y) == 15


def test_the_pickle_folder_itself_is_usable_and_names_its_parent_as_data_dir(tmp_path, capsys):
    folder = write(tmp_path, HUNDRED, rows=2)
    code, out = check(capsys, "cifar100", str(folder))
    assert code == 0 and "the python pickle folder" in out
    assert "2 training and 2 test images" in out and f"data_dir: {tmp_path} " in out


def test_missing_and_broken_files_are_named_and_exit_1(tmp_path, capsys):
    folder = write(tmp_path, TEN)
    (folder / "data_batch_3").unlink()
    (folder / "test_batch").write_bytes(b"truncated")
    entry = {"data": np.zeros((2, 100), dtype=np.uint8), "labels": [0, 1]}
    (folder / "data_batch_5").write_bytes(pickle.dumps(entry))
    code, out = check(capsys, "cifar10", str(tmp_path))
    assert code == 1 and out.startswith(f"cifar10: not usable in {tmp_path}")
    assert "data_batch_3: missing" in out and "test_batch: unreadable" in out
    assert "data_batch_5: data is uint8 (2, 100), not uint8 rows of 3072" in out


def test_an_empty_directory_says_where_to_get_the_archive(tmp_path, capsys):
    code, out = check(capsys, "cifar10", str(tmp_path))
    assert code == 1 and "no cifar-10-batches-py/ folder" in out
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in out
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"")
    assert "extract cifar-10-python.tar.gz there" in check(capsys, "cifar10", str(tmp_path))[1]


def test_an_unknown_data_set_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "check", "digits", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown dataset 'digits'" in err and "cifar10, cifar100" in err and "\n" not in err


@pytest.mark.parametrize("layout", [TEN, HUNDRED])
def test_a_missing_meta_file_is_named(tmp_path, capsys, layout):
    folder = write(tmp_path, layout)
    (folder / layout[3]).unlink()
    code, out = check(capsys, "cifar10" if layout is TEN else "cifar100", str(tmp_path))
    assert code == 1 and f"{layout[3]}: missing" in out
