"""The device path's batched augmentations against the torchvision transforms they replace.

Distribution checks use fixed seeds (deterministic) and compare many draws of the batched
implementation with draws of torchvision's own transform on the same images.
"""

from __future__ import annotations

import gc
import random

import pytest
import torch
from scipy import stats
from torchvision.transforms import v2

from robustbench_opt.config import Recipe
from robustbench_opt.data import train_batches
from robustbench_opt.data import transforms as tv_path
from robustbench_opt.data.device import (
    _RESIDENT,
    TA_BINS,
    TA_FUNCTIONS,
    TASample,
    apply_trivialaugment,
    augment,
    cutmix,
    cutmix_params,
    device_batches,
    magnitude_table,
    random_brightness,
    random_crop,
    random_flip,
    resident,
    sample_trivialaugment,
    ta_ops,
    use_device_path,
)
from robustbench_opt.data.splits import DataSplits
from robustbench_opt.errors import UserError

CPU = torch.device("cpu")
TV_TA = v2.TrivialAugmentWide()
TA_SPACE_ITEMS = list(v2.TrivialAugmentWide._AUGMENTATION_SPACE.items())
TA_OPS = ta_ops()


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int, channels: int, size: int, seed: int = 0) -> torch.Tensor:
    """Half noise, half smooth images with a random base level (exercises clipping, histograms)."""
    g = _generator(seed)
    x = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    base = torch.randint(0, 236, (n // 2, channels, 1, 1), generator=g, dtype=torch.uint8)
    noise = torch.randint(0, 20, (n // 2, channels, size, size), generator=g, dtype=torch.uint8)
    x[: n // 2] = base + noise
    return x


def _torchvision_op(image: torch.Tensor, name: str, magnitude: float) -> torch.Tensor:
    """What TrivialAugmentWide does to one image for a drawn operation and magnitude."""
    return TV_TA._apply_image_or_video_transform(
        image, name, magnitude, interpolation=TV_TA.interpolation, fill=TV_TA._fill
    )


def _offsets(crops: torch.Tensor, padding: int) -> torch.Tensor:
    """(n, 2) crop offsets recovered from crops of an all-255 image (padding shows as 0)."""
    size = crops.shape[-1]
    filled = crops[:, 0] > 0
    found = []
    for axis in (1, 2):  # rows, then columns
        hit = filled.any(dim=axis).to(torch.int64)
        first = hit.argmax(dim=1)
        last = size - 1 - hit.flip(1).argmax(dim=1)
        found.append(padding - first + (size - 1 - last))
    return torch.stack(found, dim=1)


def _uniform_p(values: torch.Tensor, k: int) -> float:
    """Chi-square goodness-of-fit p-value of integer values against uniform over 0..k-1."""
    counts = torch.bincount(values, minlength=k)
    assert len(counts) == k
    return float(stats.chisquare(counts.numpy()).pvalue)


def test_crop_offsets_uniform_over_same_support_as_torchvision_random_crop():
    padding, size = 2, 8
    white = torch.full((4000, 1, size, size), 255, dtype=torch.uint8)
    ours = _offsets(random_crop(white, padding, _generator()), padding)
    torch.manual_seed(0)
    crop = v2.RandomCrop(size, padding=padding)
    theirs = _offsets(torch.stack([crop(img) for img in white[:1500]]), padding)
    for offsets in (ours, theirs):
        for axis in (0, 1):
            assert set(offsets[:, axis].tolist()) == set(range(2 * padding + 1))
            assert _uniform_p(offsets[:, axis], 2 * padding + 1) > 1e-3
    cells = ours[:, 0] * (2 * padding + 1) + ours[:, 1]  # y and x independent: 25 joint cells
    assert _uniform_p(cells, (2 * padding + 1) ** 2) > 1e-3


def test_crop_pastes_the_image_at_the_offset_with_zero_padding():
    x = _images(64, 3, 8)
    out = random_crop(x, 3, _generator(1))
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3))
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(7)
            for dx in range(7)
            if torch.equal(out[i], padded[i, :, dy : dy + 8, dx : dx + 8])
        ]
        assert matches


def test_crop_stage_alone_never_flips():
    x = torch.arange(8, dtype=torch.uint8).repeat(500, 1, 8, 1)  # columns 0..7: asymmetric
    out = augment(x, Recipe(augment=("crop",), crop_padding=0), _generator())
    assert torch.equal(out, x)  # zero padding: the crop is the identity, and nothing flips
    flipped = augment(x, Recipe(augment=("crop_flip",), crop_padding=0), _generator())
    assert not torch.equal(flipped, x)


def test_flip_rate_is_one_half_like_torchvision():
    x = torch.arange(8, dtype=torch.uint8).repeat(6000, 1, 8, 1)  # columns 0..7: asymmetric
    flipped = random_flip(x, _generator())[:, 0, 0, 0] == 7
    torch.manual_seed(0)
    flip = v2.RandomHorizontalFlip()
    theirs = torch.tensor([bool(flip(img)[0, 0, 0] == 7) for img in x[:2000]])
    assert abs(flipped.double().mean().item() - 0.5) < 0.02  # 3 sigma at n = 6000
    assert abs(theirs.double().mean().item() - 0.5) < 0.034  # 3 sigma at n = 2000
    unflipped = random_flip(x, _generator())
    assert torch.equal(unflipped[~flipped], x[~flipped])
    assert torch.equal(unflipped[flipped], x[flipped].flip(-1))


def test_brightness_delta_is_uniform_and_matches_the_torchvision_path():
    max_delta, level = 0.3, 128
    grey = torch.full((6000, 1, 2, 2), level, dtype=torch.uint8)
    ours = (random_brightness(grey, max_delta, _generator())[:, 0, 0, 0].double() - level) / 255
    torch.manual_seed(0)
    step = tv_path.RandomBrightness(max_delta)
    theirs = torch.tensor([float(step(img)[0, 0, 0]) for img in grey[:2000]]).sub(level) / 255
    assert ours.min() >= -max_delta - 0.5 / 255 and ours.max() <= max_delta + 0.5 / 255
    uniform = stats.uniform(loc=-max_delta, scale=2 * max_delta).cdf
    assert stats.kstest(ours.numpy(), uniform).statistic < 0.02  # rounding to 1/255 adds < 0.007
    assert stats.ks_2samp(ours.numpy(), theirs.numpy()).pvalue > 0.01
    bright = torch.full((2000, 1, 2, 2), 250, dtype=torch.uint8)
    shifted = random_brightness(bright, max_delta, _generator())
    assert shifted.max() == 255 and shifted.min() >= round((250 / 255 - max_delta) * 255)


def test_trivialaugment_uses_torchvision_op_set_and_magnitude_tables():
    assert TA_OPS == tuple(v2.TrivialAugmentWide._AUGMENTATION_SPACE)
    assert set(TA_FUNCTIONS) == set(TA_OPS)
    table, signed = magnitude_table(CPU)
    sample = sample_trivialaugment(40_000, _generator(), CPU)
    for index, (name, (fn, is_signed)) in enumerate(TA_SPACE_ITEMS):
        values = fn(TA_BINS, 32, 32)
        drawn = sample.magnitudes[sample.ops == index]
        if values is None:
            assert torch.all(drawn == 0)
            continue
        expected = set(values.float().tolist())
        if is_signed:
            expected |= {-v for v in expected}
            negative = (drawn < 0).double().mean().item()
            nonzero = (drawn != 0).double().mean().item()
            assert abs(negative - 0.5 * nonzero) < 0.05, name
        assert set(drawn.tolist()) <= expected, name
        assert len(set(drawn.abs().tolist())) == len(set(values.float().tolist())), name
        assert bool(signed[index]) == is_signed


def test_trivialaugment_operations_uniform_and_varied_within_one_batch():
    sample = sample_trivialaugment(28_000, _generator(), CPU)
    assert _uniform_p(sample.ops, len(TA_OPS)) > 1e-3
    one_batch = sample_trivialaugment(256, _generator(1), CPU)
    assert len(set(one_batch.ops.tolist())) == len(TA_OPS)  # every op appears in one batch


@pytest.mark.parametrize("channels,size", [(3, 32), (1, 8)])
@pytest.mark.parametrize("name", TA_OPS)
def test_each_batched_op_equals_torchvision_for_every_magnitude(name, channels, size):
    x = _images(8, channels, size)
    table, signed = magnitude_table(CPU)
    index = TA_OPS.index(name)
    signs = (1.0, -1.0) if signed[index] else (1.0,)
    magnitudes = sorted({float(m) * s for m in table[index] for s in signs})
    for magnitude in magnitudes:
        ours = TA_FUNCTIONS[name](x, torch.full((len(x),), magnitude))
        theirs = torch.stack([_torchvision_op(img, name, magnitude) for img in x])
        assert torch.equal(ours, theirs), (name, magnitude)


def test_grouped_batch_applies_each_images_own_op_and_magnitude():
    x = _images(160, 3, 16, seed=3)
    sample = sample_trivialaugment(len(x), _generator(2), CPU)
    out = apply_trivialaugment(x, sample)
    assert len(set(sample.ops.tolist())) == len(TA_OPS)
    for i in range(len(x)):
        name, magnitude = TA_OPS[int(sample.ops[i])], float(sample.magnitudes[i])
        assert torch.equal(out[i], _torchvision_op(x[i], name, magnitude)), (i, name, magnitude)


def test_quarter_turn_rotation_takes_torchvisions_exact_path():
    x = _images(4, 3, 8)
    sample = TASample(
        ops=torch.full((4,), TA_OPS.index("Rotate")),
        magnitudes=torch.tensor([90.0, -90.0, 0.0, 45.0]),
    )
    out = apply_trivialaugment(x, sample)
    assert torch.equal(out[0], torch.rot90(x[0], 1, dims=(-2, -1)))
    assert torch.equal(out[1], torch.rot90(x[1], 3, dims=(-2, -1)))
    assert torch.equal(out[2], x[2])


@pytest.mark.parametrize("alpha", [1.0, 0.4])
def test_cutmix_lambda_is_beta_and_corrected_area_matches_torchvision(alpha):
    size = 32
    rng = random.Random(0)
    draws = [cutmix_params(size, size, alpha, rng) for _ in range(4000)]
    lams = [d.lam for d in draws]
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    for d in draws:
        x1, y1, x2, y2 = d.box
        assert 0 <= x1 <= x2 <= size and 0 <= y1 <= y2 <= size
        assert d.lam_adjusted == pytest.approx(1 - (x2 - x1) * (y2 - y1) / size**2, abs=1e-12)
    torch.manual_seed(0)
    reference = v2.CutMix(alpha=alpha, num_classes=10)
    image = torch.empty(2, 3, size, size)
    theirs = [reference.make_params([image])["lam_adjusted"] for _ in range(2000)]
    ours = [d.lam_adjusted for d in draws]
    assert stats.ks_2samp(ours, theirs).pvalue > 0.01
    mean_gap = sum(a - b for a, b in zip(ours, lams, strict=True)) / len(ours)
    assert mean_gap > 0  # clipping at the border only shrinks the box


def test_cutmix_pastes_from_the_rolled_batch_and_mixes_labels_by_area():
    x = _images(6, 3, 16)
    labels = torch.nn.functional.one_hot(torch.arange(6) % 4, 4).float()
    draw = cutmix_params(16, 16, 1.0, random.Random(3))
    out, mixed = cutmix(x, labels, draw)
    x1, y1, x2, y2 = draw.box
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[y1:y2, x1:x2] = True
    assert torch.equal(out[..., inside], x.roll(1, 0)[..., inside])
    assert torch.equal(out[..., ~inside], x[..., ~inside])
    expected = draw.lam_adjusted * labels + (1 - draw.lam_adjusted) * labels.roll(1, 0)
    assert torch.allclose(mixed, expected, atol=1e-7)
    assert torch.allclose(mixed.sum(1), torch.ones(6), atol=1e-6)


def _splits(n: int = 400, channels: int = 3, size: int = 8, classes: int = 10) -> DataSplits:
    x = _images(n, channels, size, seed=5)
    y = torch.arange(n) % classes
    return DataSplits("fake", classes, (channels, size, size), (0.4,) * channels, (0.2,) * channels,
                      x, y, x[:10], y[:10])  # fmt: skip


def test_epoch_is_a_seeded_permutation_of_full_batches_normalised():
    splits = _splits(n=103)
    recipe = Recipe(batch_size=10)
    batches = list(device_batches(splits, recipe, CPU, seed=1, epoch=1))
    assert len(batches) == 10  # the last partial batch is dropped, as in the loader
    images = torch.cat([b[0] for b in batches])
    flat = splits.train_x.flatten(1).to(torch.float32) / 255
    expected = (flat - 0.4) / 0.2
    rows = [int(torch.argmin((expected - img.flatten()).abs().amax(1))) for img in images]
    assert len(set(rows)) == 100
    assert torch.allclose(images.flatten(1), expected[rows], atol=1e-5)
    again = list(device_batches(splits, recipe, CPU, seed=1, epoch=1))
    other = list(device_batches(splits, recipe, CPU, seed=1, epoch=2))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(batches[0][0], other[0][0])


def test_cutmix_applied_to_a_share_of_batches_with_soft_labels():
    splits = _splits(n=2000)
    recipe = Recipe(batch_size=5, cutmix_prob=0.3, augment=("crop_flip", "trivialaugment"))
    soft = [y for _, y in device_batches(splits, recipe, CPU, seed=0, epoch=1) if y.ndim == 2]
    assert abs(len(soft) / 400 - 0.3) < 0.07  # 3 sigma at 400 batches
    assert all(torch.allclose(y.sum(1), torch.ones(5)) for y in soft)


def test_bad_inputs_fail_at_the_call_with_one_line():
    splits = _splits(n=20)
    with pytest.raises(UserError, match="batch_size 64 exceeds the 20"):
        device_batches(splits, Recipe(batch_size=64), CPU, 0, 1)
    with pytest.raises(UserError, match="unknown augmentation 'crop_flp'.*did you mean"):
        device_batches(splits, Recipe(batch_size=4, augment=("crop_flp",)), CPU, 0, 1)


def test_dispatch_follows_the_decided_data_path():
    splits = _splits(n=40)
    assert use_device_path(splits, Recipe(data_on_device=None), CPU)
    assert not use_device_path(splits, Recipe(data_on_device=False), CPU)
    recipe = Recipe(batch_size=8, augment=("crop_flip",))
    ours = [x for x, _ in train_batches(splits, recipe, CPU, 0, 1, on_device=True)]
    direct = [x for x, _ in device_batches(splits, recipe, CPU, 0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(ours, direct, strict=True))
    loader = [x for x, _ in train_batches(splits, recipe, CPU, 0, 1, on_device=False)]
    assert len(loader) == len(direct) and not all(
        torch.equal(a, b) for a, b in zip(loader, direct, strict=True)
    )  # the other path: another augmentation stream


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_path_matches_cpu_ops_and_stays_on_device():
    cuda = torch.device("cuda")
    x = _images(128, 3, 32)
    sample = sample_trivialaugment(len(x), _generator(4), CPU)
    on_gpu = TASample(sample.ops.to(cuda), sample.magnitudes.to(cuda))
    ours = apply_trivialaugment(x.to(cuda), on_gpu).cpu()
    expected = apply_trivialaugment(x, sample)
    assert (ours != expected).float().mean() < 1e-3  # grid rounding may differ on rare pixels
    splits = _splits(n=512)
    recipe = Recipe(batch_size=64, augment=("crop_flip", "trivialaugment"), cutmix_prob=1.0)
    for images, targets in device_batches(splits, recipe, cuda, 0, 1):
        assert images.device.type == "cuda" and targets.device.type == "cuda"


def test_split_is_copied_to_a_device_once_and_dropped_with_its_source():
    meta = torch.device("meta")  # stands in for an accelerator on a CPU-only machine
    x, y = _images(8, 1, 8), torch.arange(8)
    first, again = resident(x, y, meta), resident(x, y, meta)
    assert first[0].device == meta and first[0] is again[0]
    assert resident(x, y, CPU)[0] is x  # already there: no copy
    key = id(x)
    del x, first, again
    gc.collect()
    assert key not in _RESIDENT
