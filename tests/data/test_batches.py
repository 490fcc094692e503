"""train_batches / eval_batches: alignment, normalisation, determinism, augmentations, CutMix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from robustbench_opt.config import AUGMENTATIONS, Recipe
from robustbench_opt.data import DataSplits, eval_batches, load_splits, train_batches
from robustbench_opt.data.loader import SeededBatches, torchvision_batches
from robustbench_opt.data.transforms import (
    _STEPS,
    RandomBrightness,
    crop_padding,
    image_transform,
)
from robustbench_opt.errors import UserError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_splits("digits", None, False, 0.0)


@pytest.fixture(scope="module")
def noise() -> DataSplits:
    """Random 3x8x8 images: every pixel differs from its neighbour image almost surely."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (96, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 5, (96,), generator=g)
    return DataSplits("noise", 5, (3, 8, 8), (0.5,) * 3, (0.25,) * 3, x, y, x[:10], y[:10])


def epoch(splits, recipe, seed=0, number=1, workers=0):
    return list(torchvision_batches(splits, recipe, CPU, seed, number, workers))


def normalise(x: torch.Tensor, splits: DataSplits) -> torch.Tensor:
    mean = torch.tensor(splits.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.std).view(1, -1, 1, 1)
    return (x.float() / 255 - mean) / std


def test_plain_batches_are_normalised_images_with_their_own_labels(noise):
    recipe = Recipe(batch_size=32)
    order = SeededBatches(noise, recipe, 0, 1).order
    batches = epoch(noise, recipe)
    assert len(batches) == 3
    images = torch.cat([b[0] for b in batches])
    labels = torch.cat([b[1] for b in batches])
    assert images.dtype == torch.float32 and labels.dtype == torch.int64
    assert torch.allclose(images, normalise(noise.train_x[order], noise), atol=1e-5)
    assert torch.equal(labels, noise.train_y[order])


def test_each_epoch_is_a_fresh_shuffle_dropping_only_the_last_partial_batch(digits):
    recipe = Recipe(batch_size=100)
    first, second = (SeededBatches(digits, recipe, 0, e).order for e in (1, 2))
    n = len(digits.train_y)
    assert sorted(first.tolist()) == list(range(n))
    assert not torch.equal(first, second)
    assert len(epoch(digits, recipe)) == n // 100


@pytest.mark.parametrize("recipe_kw", [{}, {"augment": AUGMENTATIONS, "cutmix_prob": 0.5}])
def test_batches_are_deterministic_for_seed_and_epoch_and_differ_across_seeds(digits, recipe_kw):
    recipe = Recipe(batch_size=128, **recipe_kw)
    first = epoch(digits, recipe, seed=3, number=2)
    torch.rand(5)  # global RNG use in between must not matter
    again = epoch(digits, recipe, seed=3, number=2)
    other = epoch(digits, recipe, seed=4, number=2)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(first[0][0], other[0][0])


def test_batches_do_not_depend_on_the_number_of_workers(digits):
    recipe = Recipe(
        batch_size=256, augment=("crop_flip", "trivialaugment"), cutmix_prob=0.5,
        data_on_device=False,
    )  # fmt: skip
    inline = epoch(digits, recipe, seed=1, workers=0)
    parallel = list(train_batches(digits, recipe, CPU, 1, 1, on_device=False))  # auto workers
    two = epoch(digits, recipe, seed=1, workers=2)
    for a, b, c in zip(inline, parallel, two, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
        assert torch.equal(a[1], b[1]) and torch.equal(a[1], c[1])


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_every_augmentation_runs_on_digits_and_keeps_shapes(digits, name):
    batches = epoch(digits, Recipe(batch_size=128, augment=(name,), cutmix_prob=1.0))
    for images, targets in batches:
        assert images.shape == (128, 1, 8, 8) and torch.isfinite(images).all()
        assert targets.shape == (128, 10)
    plain = epoch(digits, Recipe(batch_size=128))
    assert not torch.equal(batches[0][0], plain[0][0])


def test_the_config_and_the_pipeline_know_the_same_augmentations():
    assert set(_STEPS) == set(AUGMENTATIONS)


def test_unknown_augmentation_is_a_user_error():
    with pytest.raises(UserError, match="did you mean 'crop_flip'"):
        image_transform(Recipe(augment=("crop_flp",)), 32)


def test_crop_padding_is_scaled_from_32_pixels():
    assert crop_padding(4, 32) == 4
    assert crop_padding(4, 8) == 1
    assert crop_padding(8, 8) == 2
    assert crop_padding(0, 8) == 0


def shifted(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """`image` moved by (dx, dy) pixels with zero fill."""
    size = image.shape[-1]
    padded = F.pad(image, (1, 1, 1, 1))
    return padded[:, 1 - dy : 1 - dy + size, 1 - dx : 1 - dx + size]


def test_crop_flip_on_digits_is_a_flip_and_a_shift_of_at_most_one_pixel(digits):
    torch.manual_seed(0)
    transform = image_transform(Recipe(augment=("crop_flip",)), 8)
    moved = 0
    for image in digits.train_x[:40]:
        out = transform(image)
        candidates = [
            shifted(source, dx, dy)
            for source in (image, image.flip(-1))
            for dx in (-1, 0, 1)
            for dy in (-1, 0, 1)
        ]
        assert any(torch.equal(out, c) for c in candidates)
        moved += not torch.equal(out, image)
    assert moved >= 20


def test_crop_alone_shifts_but_never_flips(digits):
    torch.manual_seed(0)
    transform = image_transform(Recipe(augment=("crop",)), 8)
    moved = 0
    for image in digits.train_x[:40]:
        out = transform(image)
        assert any(
            torch.equal(out, shifted(image, dx, dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)
        )
        moved += not torch.equal(out, image)
    assert moved >= 20


def test_brightness_shifts_each_image_by_one_clipped_delta():
    torch.manual_seed(0)
    brighten = RandomBrightness(0.5)
    x = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    for _ in range(10):
        out = brighten(x).int()
        inside = (out > 0) & (out < 255)
        delta = (out - x.int())[inside]
        assert delta.max() - delta.min() <= 1  # one delta per image, rounded to 8 bits
        assert delta.abs().max() <= 0.5 * 255 + 1
        assert ((out == 0) | (out == 255) | inside).all()


def test_cutmix_pastes_one_box_from_the_neighbour_and_mixes_labels_by_its_area(noise):
    recipe = Recipe(batch_size=48, cutmix_prob=1.0, cutmix_alpha=1.0)
    batches = SeededBatches(noise, recipe, 5, 1)
    mixed_areas = []
    for b in range(len(batches)):
        images, targets = batches[b]
        index = batches.order[b * 48 : (b + 1) * 48]
        x, y = noise.train_x[index], noise.train_y[index]
        box = (images != x).any(dim=(0, 1))  # pixels taken from the neighbour in any image
        assert torch.equal(images[:, :, box], x.roll(1, 0)[:, :, box])
        assert torch.equal(images[:, :, ~box], x[:, :, ~box])
        lam = 1 - box.sum().item() / box.numel()
        expected = lam * F.one_hot(y, 5) + (1 - lam) * F.one_hot(y.roll(1, 0), 5)
        assert targets.dtype == torch.float32
        assert torch.allclose(targets, expected.float(), atol=1e-6)
        assert torch.allclose(targets.sum(dim=1), torch.ones(48), atol=1e-6)
        mixed_areas.append(box.sum().item())
    assert max(mixed_areas) > 0


def test_cutmix_probability_sets_the_share_of_mixed_batches(digits):
    recipe = Recipe(batch_size=16, cutmix_prob=0.5)
    mixed = [targets.ndim == 2 for _, targets in epoch(digits, recipe)]
    assert 0.3 < sum(mixed) / len(mixed) < 0.7  # 89 batches, binomial sd 0.053
    assert not any(t.ndim == 2 for _, t in epoch(digits, Recipe(batch_size=16)))


def test_batch_larger_than_the_training_split_is_a_user_error(noise):
    with pytest.raises(UserError, match="batch_size 100 exceeds the 96 training images"):
        epoch(noise, Recipe(batch_size=100))


def test_eval_batches_cover_the_split_in_order_with_a_partial_last_batch(digits):
    batches = list(eval_batches(digits.test_x, digits.test_y, digits, 100, CPU))
    assert [len(y) for _, y in batches][-1] == len(digits.test_y) % 100
    images = torch.cat([x for x, _ in batches])
    assert torch.allclose(images, normalise(digits.test_x, digits), atol=1e-5)
    assert torch.equal(torch.cat([y for _, y in batches]), digits.test_y)


def test_normalised_train_split_has_zero_mean_and_unit_std(digits):
    images = torch.cat(
        [x for x, _ in eval_batches(digits.train_x, digits.train_y, digits, 512, CPU)]
    )
    assert images.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert images.std(correction=0).item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_batches_land_on_the_gpu_and_match_the_cpu_ones(digits):
    recipe = Recipe(batch_size=128, augment=("crop_flip",), cutmix_prob=0.5)
    cuda = list(torchvision_batches(digits, recipe, torch.device("cuda"), 0, 1, 0))
    for (gx, gy), (cx, cy) in zip(cuda, epoch(digits, recipe), strict=True):
        assert gx.is_cuda and gy.is_cuda
        assert torch.allclose(gx.cpu(), cx, atol=1e-5) and torch.equal(gy.cpu(), cy)
