"""Device-resident training data with batched augmentation.

Longer than 400 lines: it holds every augmentation's batched twin of torchvision's, each small
and tested against it, which belong together.

The training split lives on the training device as one uint8 tensor (N, C, H, W images, or
N, C, L sequences, which take no augmentation: `datasets.check_augmentation`). Each epoch draws a
seeded permutation and augments whole batches there, stage by stage in `recipe.augment` order
(uint8 -> uint8), with the same distributions as the per-image transforms of `data.transforms`:

- crop_flip: `v2.RandomCrop(size, padding=p)` (offsets uniform over 0..2p per axis, zero
  padding; p scaled to the image size as there) then `v2.RandomHorizontalFlip(p=0.5)`;
- brightness: `transforms.RandomBrightness`: a delta uniform in [-b, b] on the [0, 1] scale,
  clipped, rounded back to uint8;
- trivialaugment: `v2.TrivialAugmentWide()` (nearest interpolation, zero fill), one operation and
  magnitude per image; images are grouped by operation and each group is transformed at once,
  with torchvision's own arithmetic (outputs equal its functional ops on CPU);
- CutMix per batch with probability p: `v2.CutMix(alpha=a)` box and corrected lambda, soft labels;
- normalisation with the data set's per-channel mean and std.

Every tensor is created on the data's device, so the same code runs on CPU and CUDA. (MPS lacks
float64, which the exact TrivialAugment arithmetic uses; the auto rule keeps MPS on the loader.)
"""

from __future__ import annotations

import math
import random
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, lru_cache
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from robustbench_opt.config import Recipe
from robustbench_opt.data.splits import DataSplits, check_batch_size, normalisation
from robustbench_opt.data.transforms import crop_padding
from robustbench_opt.datasets import check_augmentation
from robustbench_opt.errors import unknown

TA_BINS = 31  # magnitude bins, torchvision's default num_magnitude_bins
DEVICE_MEMORY_SHARE = 0.25  # auto mode: data may take at most this share of free device memory


# --------------------------------------------------------------------------- crop, flip, brightness


def crop_offsets(n: int, padding: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """(n, 2) offsets (y, x) into the padded image, uniform over 0..2*padding like v2.RandomCrop."""
    return torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=device)


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad every image by `padding` and crop it back to its size at a random offset."""
    n, _, h, w = x.shape
    offsets = crop_offsets(n, padding, generator, x.device)
    padded = F.pad(x, (padding, padding, padding, padding))
    rows = offsets[:, 0, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = offsets[:, 1, None] + torch.arange(w, device=x.device)  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indices around a slice put the indexed dims first: (n, h, w, c).
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Flip each image horizontally with probability 0.5."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def brightness_deltas(n: int, max_delta: float, generator: torch.Generator) -> Tensor:
    """(n, 1, 1, 1) deltas uniform in [-max_delta, max_delta]."""
    u = torch.rand(n, 1, 1, 1, generator=generator, device=generator.device)
    return (u * 2 - 1) * max_delta


def random_brightness(x: Tensor, max_delta: float, generator: torch.Generator) -> Tensor:
    """`transforms.RandomBrightness` per image: add a delta on the [0, 1] scale, clip, round
    back to uint8."""
    delta = brightness_deltas(x.shape[0], max_delta, generator)
    shifted = (x.to(torch.float32) / 255 + delta).clamp_(0, 1)
    return shifted.mul_(255).round_().to(torch.uint8)


# --------------------------------------------------------------------------- TrivialAugmentWide


@cache
def ta_space() -> dict[str, tuple[Callable[..., Tensor | None], bool]]:
    """TrivialAugmentWide's operations and magnitude ranges, from torchvision itself so that
    they cannot drift (imported when first asked: importing torchvision takes about a second,
    which a trial without TrivialAugment does not pay)."""
    from torchvision.transforms import v2

    return v2.TrivialAugmentWide._AUGMENTATION_SPACE


def ta_ops() -> tuple[str, ...]:
    """TrivialAugmentWide's operation names, in torchvision's order (a `TASample`'s indices)."""
    return tuple(ta_space())


@dataclass(frozen=True)
class TASample:
    """Per-image TrivialAugment draws: operation index into `ta_ops()` and signed magnitude."""

    ops: Tensor  # (n,) int64
    magnitudes: Tensor  # (n,) float32; 0 for operations without a magnitude


@lru_cache(maxsize=8)
def magnitude_table(device: torch.device) -> tuple[Tensor, Tensor]:
    """(ops, bins) magnitudes and (ops,) signed flags, exactly torchvision's tables."""
    rows, signed = [], []
    for fn, is_signed in ta_space().values():
        values = fn(TA_BINS, 32, 32)  # no entry depends on the image size
        rows.append(torch.zeros(TA_BINS) if values is None else values.to(torch.float32))
        signed.append(is_signed)
    return torch.stack(rows).to(device), torch.tensor(signed, device=device)


def sample_trivialaugment(n: int, generator: torch.Generator, device: torch.device) -> TASample:
    """Draw an operation, a magnitude bin and a sign for each of `n` images."""
    table, signed = magnitude_table(device)
    ops = torch.randint(len(ta_ops()), (n,), generator=generator, device=device)
    bins = torch.randint(TA_BINS, (n,), generator=generator, device=device)
    negate = (torch.rand(n, generator=generator, device=device) <= 0.5) & signed[ops]
    magnitudes = table[ops, bins] * torch.where(negate, -1.0, 1.0)
    return TASample(ops=ops, magnitudes=magnitudes)


def _inverse_affine(
    angle: Tensor, shear_x: Tensor, shear_y: Tensor, center: tuple[float, float], translate: Tensor
) -> Tensor:
    """Batched `torchvision.transforms.functional._get_inverse_affine_matrix` (scale 1), float64.

    angle and shears in degrees, (n,); translate (n, 2) pixels; center relative to the image
    centre. Returns (n, 2, 3).
    """
    rot, sx, sy = torch.deg2rad(angle), torch.deg2rad(shear_x), torch.deg2rad(shear_y)
    cx, cy = center
    a = torch.cos(rot - sy) / torch.cos(sy)
    b = -torch.cos(rot - sy) * torch.tan(sx) / torch.cos(sy) - torch.sin(rot)
    c = torch.sin(rot - sy) / torch.cos(sy)
    d = -torch.sin(rot - sy) * torch.tan(sx) / torch.cos(sy) + torch.cos(rot)
    m0, m1, m3, m4 = d, -b, -c, a
    ux, uy = -cx - translate[:, 0], -cy - translate[:, 1]
    m2 = m0 * ux + m1 * uy + cx
    m5 = m3 * ux + m4 * uy + cy
    return torch.stack([m0, m1, m2, m3, m4, m5], dim=1).view(-1, 2, 3)


def _warp(x: Tensor, matrix: Tensor) -> Tensor:
    """Nearest-neighbour warp with zero fill, like torchvision's `_apply_grid_transform`."""
    n, _, h, w = x.shape
    theta = matrix.to(torch.float32)
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=x.device)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=x.device))
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=x.device)
    base[..., 1].copy_(ys.unsqueeze_(-1))
    base[..., 2].fill_(1)
    scale = torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=x.device)
    rescaled = theta.transpose(1, 2).div(scale)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    out = F.grid_sample(x.to(torch.float32), grid, "nearest", "zeros", align_corners=False)
    return out.round_().to(x.dtype)


def _shear(axis: int) -> Callable[[Tensor, Tensor], Tensor]:
    def op(x: Tensor, m: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        shear = torch.rad2deg(torch.atan(m.double()))
        zero = torch.zeros_like(shear)
        sx, sy = (shear, zero) if axis == 0 else (zero, shear)
        matrix = _inverse_affine(zero, sx, sy, (-0.5 * w, -0.5 * h), torch.zeros(len(m), 2).to(sx))
        return _warp(x, matrix)

    return op


def _translate(axis: int) -> Callable[[Tensor, Tensor], Tensor]:
    def op(x: Tensor, m: Tensor) -> Tensor:
        zero = torch.zeros(len(m), dtype=torch.float64, device=x.device)
        shift = m.double().trunc()  # torchvision passes int(magnitude)
        translate = torch.stack([shift, zero] if axis == 0 else [zero, shift], dim=1)
        return _warp(x, _inverse_affine(zero, zero, zero, (0.0, 0.0), translate))

    return op


def _rotate(x: Tensor, m: Tensor) -> Tensor:
    angle = m.double().remainder(360.0)
    zero = torch.zeros_like(angle)
    out = _warp(x, _inverse_affine(-angle, zero, zero, (0.0, 0.0), torch.stack([zero, zero], 1)))
    if x.shape[-1] == x.shape[-2]:  # torchvision's exact fast paths for quarter turns
        for turns, degrees in ((1, 90.0), (3, 270.0)):
            hit = (angle == degrees)[:, None, None, None]
            out = torch.where(hit, torch.rot90(x, k=turns, dims=(-2, -1)), out)
    return out


def _blend(x: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """torchvision `_blend` for uint8 images with a per-image ratio."""
    r = ratio.to(torch.float32).view(-1, 1, 1, 1)
    alpha = (1.0 - ratio.double()).to(torch.float32).view(-1, 1, 1, 1)
    return (x * r).addcmul_(other, alpha).clamp_(0, 255).to(torch.uint8)


def _gray(x: Tensor) -> Tensor:
    """Luma of uint8 images as float, floored like torchvision does for integer images."""
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _brightness(x: Tensor, m: Tensor) -> Tensor:
    factor = (1.0 + m.double()).to(torch.float32).view(-1, 1, 1, 1)
    return x.mul(factor).clamp_(0, 255).to(torch.uint8)


def _color(x: Tensor, m: Tensor) -> Tensor:
    if x.shape[-3] == 1:  # torchvision leaves single-channel images unchanged
        return x
    return _blend(x, _gray(x), 1.0 + m.double())


def _contrast(x: Tensor, m: Tensor) -> Tensor:
    gray = _gray(x) if x.shape[-3] == 3 else x.to(torch.float32)
    mean = gray.mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, 1.0 + m.double())


def _sharpness(x: Tensor, m: Tensor) -> Tensor:
    n, c, h, w = x.shape
    if h <= 2 or w <= 2:
        return x
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], device=x.device)
    out = x.to(torch.float32)
    blurred = F.conv2d(out, kernel.expand(c, 1, 3, 3), groups=c).round_()
    alpha = (1.0 - (1.0 + m.double())).to(torch.float32).view(-1, 1, 1, 1)
    view = out[..., 1:-1, 1:-1]
    view.addcmul_(blurred.sub_(view), alpha)
    return out.clamp_(0, 255).to(torch.uint8)


def _posterize(x: Tensor, m: Tensor) -> Tensor:
    bits = m.to(torch.int64)
    mask = ((1 << bits) - 1) << (8 - bits)
    return x & mask.to(torch.uint8).view(-1, 1, 1, 1)


def _solarize(x: Tensor, m: Tensor) -> Tensor:
    threshold = (255.0 * m.double()).to(torch.float32).view(-1, 1, 1, 1)
    return torch.where(x >= threshold, 255 - x, x)


TA_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Identity": lambda x, m: x,
    "ShearX": _shear(0),
    "ShearY": _shear(1),
    "TranslateX": _translate(0),
    "TranslateY": _translate(1),
    "Rotate": _rotate,
    "Brightness": _brightness,
    "Color": _color,
    "Contrast": _contrast,
    "Sharpness": _sharpness,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "AutoContrast": lambda x, m: _functional().autocontrast(x),
    "Equalize": lambda x, m: _functional().equalize(x),
}


def _functional() -> ModuleType:
    """torchvision.transforms.v2.functional, imported when an operation first needs it."""
    from torchvision.transforms.v2 import functional

    return functional


def apply_trivialaugment(x: Tensor, sample: TASample) -> Tensor:
    """Apply each image's drawn operation: one batched call per operation present."""
    out = x.clone()
    for index, name in enumerate(ta_ops()):
        rows = (sample.ops == index).nonzero().squeeze(1)
        if rows.numel() and name != "Identity":
            out[rows] = TA_FUNCTIONS[name](x[rows], sample.magnitudes[rows])
    return out


def trivialaugment(x: Tensor, generator: torch.Generator) -> Tensor:
    """TrivialAugmentWide on a uint8 batch, a different operation and magnitude per image."""
    return apply_trivialaugment(x, sample_trivialaugment(x.shape[0], generator, x.device))


# --------------------------------------------------------------------------- CutMix


@dataclass(frozen=True)
class CutMixDraw:
    """One batch's CutMix parameters."""

    lam: float  # drawn from Beta(alpha, alpha)
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (exclusive ends)
    lam_adjusted: float  # 1 - box area / image area: the label weight of the batch's own image


def cutmix_params(h: int, w: int, alpha: float, rng: random.Random) -> CutMixDraw:
    """v2.CutMix's draw: lambda ~ Beta(alpha, alpha), box centre uniform over the pixels, half
    sides int(0.5 * sqrt(1 - lambda) * size), clipped to the image; lambda corrected to the
    box's real area."""
    lam = rng.betavariate(alpha, alpha)
    r_x, r_y = rng.randrange(w), rng.randrange(h)
    r = 0.5 * math.sqrt(1.0 - lam)
    r_w, r_h = int(r * w), int(r * h)
    x1, y1, x2, y2 = max(r_x - r_w, 0), max(r_y - r_h, 0), min(r_x + r_w, w), min(r_y + r_h, h)
    return CutMixDraw(lam, (x1, y1, x2, y2), 1.0 - (x2 - x1) * (y2 - y1) / (w * h))


def cutmix(x: Tensor, y: Tensor, draw: CutMixDraw) -> tuple[Tensor, Tensor]:
    """Paste the box from the batch rolled by one (as v2.CutMix pairs images) and mix the soft
    labels `y` with the corrected lambda."""
    x1, y1, x2, y2 = draw.box
    lam = draw.lam_adjusted
    out = x.clone()
    out[..., y1:y2, x1:x2] = x.roll(1, 0)[..., y1:y2, x1:x2]
    return out, y * lam + y.roll(1, 0) * (1.0 - lam)


# --------------------------------------------------------------------------- the epoch iterator


Stage = Callable[[Tensor, Recipe, torch.Generator], Tensor]

STAGES: dict[str, Stage] = {
    "crop": lambda x, recipe, g: random_crop(x, crop_padding(recipe.crop_padding, x.shape[-1]), g),
    "crop_flip": lambda x, recipe, g: random_flip(
        random_crop(x, crop_padding(recipe.crop_padding, x.shape[-1]), g), g
    ),
    "brightness": lambda x, recipe, g: random_brightness(x, recipe.brightness, g),
    "trivialaugment": lambda x, recipe, g: trivialaugment(x, g),
}


def augment(x: Tensor, recipe: Recipe, generator: torch.Generator) -> Tensor:
    """A uint8 batch through `recipe.augment`'s stages, in that order (uint8 -> uint8)."""
    for name in recipe.augment:
        x = STAGES[name](x, recipe, generator)
    return x


_RESIDENT: dict[int, tuple[torch.device, Tensor, Tensor]] = {}  # id(source x) -> device copy


def resident(x: Tensor, y: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
    """`x` and `y` on `device`: copied on first use and reused across epochs; the copy is
    dropped when `x` is (one copy per source, so a trial's split leaves the GPU with it)."""
    if x.device == device and y.device == device:
        return x, y
    key = id(x)
    cached = _RESIDENT.get(key)
    if cached is None:
        weakref.finalize(x, _RESIDENT.pop, key, None)
    if cached is None or cached[0] != device:
        _RESIDENT.pop(key, None)  # free the old copy before making the new one
        cached = _RESIDENT[key] = (device, x.to(device), y.to(device))
    return cached[1], cached[2]


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch of one trial."""
    return (seed * 1_000_003 + epoch) % 2**63


def device_batches(
    splits: DataSplits, recipe: Recipe, device: torch.device, seed: int, epoch: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of (normalised images in the default float dtype, targets) made on `device`, like
    `loader.torchvision_batches`: a seeded permutation, full batches only, batched augmentation;
    targets are int64 labels, or soft labels [B, K] for a CutMixed batch."""
    check_batch_size(splits, recipe.batch_size)
    check_augmentation(splits.name, splits.shape, recipe.augment, recipe.cutmix_prob)
    for name in recipe.augment:
        if name not in STAGES:
            raise unknown("augmentation", name, STAGES, "fix the recipe's augment list")
    return _epoch(splits, recipe, device, epoch_seed(seed, epoch))


def _epoch(
    splits: DataSplits, recipe: Recipe, device: torch.device, seed: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of `device_batches`, drawn from RNGs seeded with `seed`."""
    n, size = len(splits.train_y), recipe.batch_size
    x_all, y_all = resident(splits.train_x, splits.train_y, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    rng = random.Random(seed)
    scale, shift = normalisation(splits, device)
    order = torch.randperm(n, generator=generator, device=device)
    for start in range(0, n - size + 1, size):  # drop the last partial batch, as the loader does
        rows = order[start : start + size]
        x, y = augment(x_all[rows], recipe, generator), y_all[rows]
        if recipe.cutmix_prob > 0 and rng.random() < recipe.cutmix_prob:
            draw = cutmix_params(x.shape[-2], x.shape[-1], recipe.cutmix_alpha, rng)
            soft = F.one_hot(y, splits.num_classes).to(torch.get_default_dtype())
            x, y = cutmix(x, soft, draw)
        yield x.to(torch.get_default_dtype()).mul_(scale).add_(shift), y


def fits_on_device(splits: DataSplits, device: torch.device) -> bool:
    """Auto mode: whether the training split may live on `device` (always on CPU: it already
    does; on CUDA when it takes at most DEVICE_MEMORY_SHARE of the free memory)."""
    if device.type != "cuda":
        return device.type == "cpu"
    free, _ = torch.cuda.mem_get_info(device)
    need = splits.train_x.nbytes + splits.train_y.nbytes
    return need <= DEVICE_MEMORY_SHARE * free


def use_device_path(splits: DataSplits, recipe: Recipe, device: torch.device) -> bool:
    """The dispatch rule: `recipe.data_on_device`, or `fits_on_device` when it is None."""
    if recipe.data_on_device is None:
        return fits_on_device(splits, device)
    return recipe.data_on_device
