"""The readers and load_splits: digits, CIFAR in torchvision's on-disk format, validation
holdout, bad input, and every dataset registry entry against what its reader returns."""

from __future__ import annotations

import pickle
from collections import Counter

import numpy as np
import pytest
import torch

from robustbench_opt.data import DATASETS, check_data, load_splits
from robustbench_opt.data.readers import SPLIT_SEED
from robustbench_opt.data.splits import channel_stats, stratified_holdout
from robustbench_opt.datasets import REGISTRY
from robustbench_opt.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", None, False, 0.0)


def rows(x: torch.Tensor) -> Counter:
    """Multiset of images, as bytes."""
    return Counter(image.numpy().tobytes() for image in x)


def test_digits_is_an_80_20_stratified_uint8_split_of_all_1797_images(digits):
    assert (digits.num_classes, digits.shape) == (10, (1, 8, 8))
    assert digits.train_x.dtype == torch.uint8 and digits.train_y.dtype == torch.int64
    assert digits.train_x.shape[1:] == (1, 8, 8) and digits.test_x.shape[1:] == (1, 8, 8)
    assert len(digits.train_y) + len(digits.test_y) == 1797
    assert digits.train_x.max() == 255 and digits.train_x.min() == 0  # 0..16 scaled to 0..255
    whole = torch.cat([digits.train_y, digits.test_y]).bincount()
    assert (digits.test_y.bincount() - 0.2 * whole).abs().max() <= 0.5
    assert digits.val_x is None and digits.val_y is None


def test_digits_splits_are_identical_on_every_load(digits):
    again = load_splits("digits", None, False, 0.0)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(digits, name), getattr(again, name))
    assert digits.mean == again.mean and digits.std == again.std


def test_mean_and_std_are_per_channel_statistics_of_the_train_split(digits):
    scaled = digits.train_x.double() / 255
    assert digits.mean[0] == pytest.approx(scaled.mean().item(), abs=1e-12)
    assert digits.std[0] == pytest.approx(scaled.std(correction=0).item(), abs=1e-12)


def test_validation_split_is_a_stratified_disjoint_part_of_the_train_split(digits):
    split = load_splits("digits", None, False, 0.25)
    assert rows(split.train_x) + rows(split.val_x) == rows(digits.train_x)
    assert len(split.train_y) + len(split.val_y) == len(digits.train_y)
    assert (split.val_y.bincount() - 0.25 * digits.train_y.bincount()).abs().max() <= 0.5
    assert torch.equal(split.test_x, digits.test_x)  # the test split is untouched
    assert torch.equal(load_splits("digits", None, False, 0.25).val_x, split.val_x)  # fixed


def test_stratified_holdout_partitions_indices_per_class():
    y = torch.tensor([0] * 10 + [1] * 20 + [2] * 7)
    kept, held = stratified_holdout(y, 0.3, seed=0)
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(len(y)))
    assert y[held].bincount().tolist() == [3, 6, 2]
    other_kept, _ = stratified_holdout(y, 0.3, seed=1)
    assert not torch.equal(kept, other_kept)


def test_channel_stats_match_a_direct_computation_across_chunks():
    x = torch.randint(0, 256, (50, 3, 4, 4), dtype=torch.uint8)
    mean, std = channel_stats(x, chunk=7)
    scaled = x.double() / 255
    assert torch.allclose(
        torch.tensor(mean, dtype=torch.float64), scaled.mean(dim=(0, 2, 3)), atol=1e-12
    )
    assert torch.allclose(
        torch.tensor(std, dtype=torch.float64), scaled.std(dim=(0, 2, 3), correction=0), atol=1e-12
    )


def write_cifar(root, folder, train_files, test_files, label_key, meta_file, meta_key, classes):
    """Writes a tiny data set in torchvision's CIFAR on-disk (pickled, CHW rows) format."""
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True)
    written = {}
    for name in train_files + test_files:
        data = rng.integers(0, 256, size=(4, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, classes, size=4)]
        with open(root / folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels}, f)
        written[name] = (data, labels)
    with open(root / folder / meta_file, "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(classes)]}, f)
    return written


def test_cifar10_loads_from_torchvision_on_disk_format(tmp_path):
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    written = write_cifar(
        tmp_path, "cifar-10-batches-py", train_files, ["test_batch"], "labels",
        "batches.meta", "label_names", 10,
    )  # fmt: skip
    split = load_splits("cifar10", str(tmp_path), False, 0.0)
    assert (split.num_classes, split.shape) == (10, (3, 32, 32))
    assert split.train_x.shape == (20, 3, 32, 32) and split.test_x.shape == (4, 3, 32, 32)
    assert split.train_x.dtype == torch.uint8
    data, labels = written["data_batch_2"]
    # a row holds 1024 red, then green, then blue values, each 32x32 row-major
    assert torch.equal(split.train_x[4:8], torch.from_numpy(data).view(4, 3, 32, 32))
    assert split.train_y[4:8].tolist() == labels
    assert split.test_y.tolist() == written["test_batch"][1]


def test_cifar100_loads_fine_labels(tmp_path):
    written = write_cifar(
        tmp_path, "cifar-100-python", ["train"], ["test"], "fine_labels",
        "meta", "fine_label_names", 100,
    )  # fmt: skip
    split = load_splits("cifar100", str(tmp_path), False, 0.0)
    assert split.num_classes == 100
    assert split.train_y.tolist() == written["train"][1]


def test_missing_cifar_files_are_a_one_line_error_naming_dir_and_settings(tmp_path):
    """A library error names settings (a notebook has no flags); the CLI adds its flags."""
    for check in (load_splits, check_data):
        with pytest.raises(UserError) as info:
            check("cifar10", str(tmp_path / "nowhere"), False)
        message = str(info.value)
        assert "\n" not in message and "--" not in message
        assert str(tmp_path / "nowhere") in message
        assert "no CIFAR-10 files" in message and "set download to true" in message
        assert info.value.settings == ("download", "data_dir")


def test_check_data_passes_present_files_digits_and_downloads_without_reading(tmp_path):
    write_cifar(
        tmp_path, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"], "labels", "batches.meta", "label_names", 10,
    )  # fmt: skip
    check_data("cifar10", str(tmp_path))
    check_data("digits")
    check_data("cifar100", str(tmp_path / "empty"), download=True)  # download fetches them
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        check_data("mnist")


def test_unreadable_cifar_files_are_a_user_error(tmp_path):
    write_cifar(
        tmp_path, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"], "labels", "batches.meta", "label_names", 10,
    )  # fmt: skip
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="unreadable"):
        load_splits("cifar10", str(tmp_path), False, 0.0)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_val_fraction_outside_unit_interval_is_a_user_error(fraction):
    with pytest.raises(UserError, match=r"val_fraction .* outside \[0, 1\)"):
        load_splits("digits", None, False, fraction)


def test_val_fraction_that_holds_out_nothing_is_a_user_error():
    with pytest.raises(UserError, match="holds out 0"):
        load_splits("digits", None, False, 0.001)


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(UserError) as info:
        load_splits("cifar11", None, False, 0.0)
    assert "did you mean 'cifar10'?" in str(info.value)
    assert all(name in str(info.value) for name in DATASETS)


CIFAR_FILES = {  # torchvision's layout of each local data set (as in the tests above)
    "cifar10": (
        "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
        "labels", "batches.meta", "label_names",
    ),
    "cifar100": (
        "cifar-100-python", ["train"], ["test"], "fine_labels", "meta", "fine_label_names",
    ),
}  # fmt: skip


def test_every_registry_entry_is_read_by_its_reader_or_has_a_case_here():
    embedded = {name for name, info in REGISTRY.items() if info.embedded}
    assert embedded == {"digits", "mnist5k", "mnist1d"}
    assert set(REGISTRY) - embedded == set(CIFAR_FILES)
    assert DATASETS == tuple(REGISTRY)


@pytest.mark.parametrize("name", ["digits", "mnist5k", "mnist1d"])
def test_embedded_entries_state_the_shape_classes_and_sizes_their_reader_returns(tmp_path, name):
    info = REGISTRY[name]
    read = info.reader().read(str(tmp_path), False, SPLIT_SEED)
    train_x, train_y, test_x, test_y, classes = read
    assert (tuple(train_x.shape), tuple(test_x.shape)) == (
        (info.train_size, *info.shape), (info.test_size, *info.shape)
    )  # fmt: skip
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    assert classes == info.num_classes == len(torch.cat([train_y, test_y]).unique())
    split = load_splits(name, str(tmp_path))
    assert (split.num_classes, split.shape) == (info.num_classes, info.shape)


@pytest.mark.parametrize("name", sorted(CIFAR_FILES))
def test_local_entries_state_the_shape_and_classes_their_reader_returns(tmp_path, name):
    """Small files in the real layout: the reader keeps every image of them (no split of its
    own, so the registered sizes are the files' full counts) at the registered shape."""
    info = REGISTRY[name]
    folder, train_files, test_files, label_key, meta, meta_key = CIFAR_FILES[name]
    written = write_cifar(
        tmp_path, folder, train_files, test_files, label_key, meta, meta_key, info.num_classes
    )
    train_x, train_y, test_x, test_y, classes = info.reader().read(str(tmp_path), False, 0)
    assert classes == info.num_classes
    assert tuple(train_x.shape) == (4 * len(train_files), *info.shape)
    assert tuple(test_x.shape) == (4 * len(test_files), *info.shape)
    assert test_y.tolist() == written[test_files[0]][1]
    info.reader().check(str(tmp_path))  # present files pass the preflight


def test_files_with_other_classes_than_registered_are_a_one_line_error(tmp_path):
    write_cifar(
        tmp_path, "cifar-100-python", ["train"], ["test"], "fine_labels",
        "meta", "fine_label_names", 10,
    )  # fmt: skip
    with pytest.raises(UserError) as info:
        load_splits("cifar100", str(tmp_path), False, 0.0)
    message = str(info.value)
    assert "\n" not in message
    assert "(3, 32, 32) in 10 classes, not (3, 32, 32) in 100 as registered" in message
    assert "point data_dir at its files" in message
