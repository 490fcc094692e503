"""MNIST-1D (Greydanus, "Scaling down deep learning", 2020, arXiv 2011.14439), generated here.

Ten 12-point digit-like templates, each whitened and started at 0. Every example is one
template put through, in this order (the paper's recipe, with its reference code's defaults):

1. padding: p ~ 36 + floor(U * 25) zeros appended (so 36..60);
2. dilation: the padded signal resampled linearly onto 12 + 60 = 72 points;
3. scale: times 1 + 0.4 (U - 0.5);
4. translation: a circular shift by k ~ uniform{0..47};
5. correlated noise where the signal is exactly 0 (the padding): N(0, 0.25^2) per point,
   smoothed by a Gaussian filter of sigma 2;
6. iid noise N(0, 0.02^2) everywhere;
7. shear: minus c * linspace(-0.5, 0.5) with c = 0.75 (U - 0.5);
8. subsampling: resampled linearly onto 40 points.

500 examples per class (5,000) are drawn class after class from one legacy numpy RandomState
seeded 42, with the random numbers taken in the reference's order, then shuffled, standardised
with the whole set's mean and std, and split 4,000 train / 1,000 test. The pipeline stores uint8,
so values are quantised: code = clip(round(128 + 20 x), 0, 255), a step of 0.05 standard
deviations over [-6.4, 6.35] (the data spans about [-5.5, 4.6]). The codes are generated on first
use and cached under the data directory as one .npy file; regenerating writes the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from robustbench_opt.data.readers import DEFAULT_DATA_DIR, Arrays
from robustbench_opt.errors import UserError

# The ten digit outlines of the reference, 12 points each (before whitening).
RAW_TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ]
)
TEMPLATE_SCALE = 6.0  # whitened templates are divided by this (std 1/6)
EPS = 1e-8  # added to the template before padding, so only the padding is exactly 0
QUANT_SCALE, QUANT_ZERO = 20.0, 128  # uint8 code = QUANT_ZERO + QUANT_SCALE * value
CACHE_NAME = "mnist1d_seed42.npy"  # under data_dir/mnist1d: (5000, 41) uint8, label last


@dataclass(frozen=True)
class Mnist1dArgs:
    """The generator's settings; the defaults are the reference's `get_dataset_args`."""

    num_samples: int = 5000
    train_split: float = 0.8
    template_len: int = 12
    padding: tuple[int, int] = (36, 60)
    scale_coeff: float = 0.4
    max_translation: int = 48
    corr_noise_scale: float = 0.25
    iid_noise_scale: float = 2e-2
    shear_scale: float = 0.75
    final_seq_length: int = 40
    seed: int = 42


def templates() -> np.ndarray:
    """(10, 12) float64: each outline whitened (mean 0, std 1), shifted to start at 0, / 6."""
    x = RAW_TEMPLATES - RAW_TEMPLATES.mean(1, keepdims=True)
    x = x / x.std(1, keepdims=True)
    return (x - x[:, :1]) / TEMPLATE_SCALE


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """`x` linearly interpolated from its own even grid on [0, 1] onto `n` even points."""
    return np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(x)), x)


def example(template: np.ndarray, args: Mnist1dArgs, rng: np.random.RandomState) -> np.ndarray:
    """One signal of `final_seq_length` points made from `template` (module docstring, 1-8)."""
    low, high = args.padding
    pad = low + int(rng.rand() * (high - low + 1))
    x = np.concatenate([template + EPS, np.zeros(pad)])
    x = _resample(x, args.template_len + high)
    x = x * (1 + args.scale_coeff * (rng.rand() - 0.5))
    x = np.roll(x, rng.choice(args.max_translation))
    background = gaussian_filter1d(args.corr_noise_scale * rng.randn(len(x)), 2)
    x = np.where(x != 0, x, background)
    x = x + args.iid_noise_scale * rng.randn(len(x))
    x = x - args.shear_scale * (rng.rand() - 0.5) * np.linspace(-0.5, 0.5, len(x))
    return _resample(x, args.final_seq_length)


def generate(args: Mnist1dArgs = Mnist1dArgs()) -> tuple[np.ndarray, np.ndarray]:
    """(x float64 [num_samples, final_seq_length], y int64): shuffled and standardised; the
    first `train_split` share is the training split."""
    rng = np.random.RandomState(args.seed)
    shapes = templates()
    per_class = args.num_samples // len(shapes)
    xs = [
        example(shapes[label], args, rng) for label in range(len(shapes)) for _ in range(per_class)
    ]
    ys = np.repeat(np.arange(len(shapes), dtype=np.int64), per_class)
    order = rng.permutation(len(ys))
    x, y = np.stack(xs)[order], ys[order]
    return (x - x.mean()) / x.std(), y


def quantise(x: np.ndarray) -> np.ndarray:
    """float values -> uint8 codes (module docstring)."""
    return np.clip(np.rint(QUANT_ZERO + QUANT_SCALE * x), 0, 255).astype(np.uint8)


def cached_table(data_dir: str | Path) -> np.ndarray:
    """(5000, 41) uint8: the 40 codes of each example, then its label; generated and written
    to `data_dir`/mnist1d/ when absent or unreadable."""
    path = Path(os.path.expanduser(data_dir)) / "mnist1d" / CACHE_NAME
    args = Mnist1dArgs()
    shape = (args.num_samples, args.final_seq_length + 1)
    try:
        table = np.load(path, allow_pickle=False)
        if table.shape == shape and table.dtype == np.uint8:
            return table
    except (OSError, ValueError):
        pass
    x, y = generate(args)
    table = np.concatenate([quantise(x), y[:, None].astype(np.uint8)], axis=1)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with open(partial, "wb") as file:  # a file object: np.save would append .npy to a name
            np.save(file, table, allow_pickle=False)
        os.replace(partial, path)  # atomic: concurrent trials never read a half-written file
    except OSError as err:
        raise UserError(
            f"could not cache MNIST-1D in {str(path.parent)!r} ({err.strerror}); "
            "point data_dir at a writable directory"
        ) from err
    return table


class Mnist1dReader:
    """MNIST-1D's fixed split from the cache under `data_dir` (the default data directory when
    None), as uint8 codes of shape (1, 40)."""

    def read(self, data_dir: str | None, download: bool, seed: int) -> Arrays:
        args = Mnist1dArgs()
        table = cached_table(data_dir or DEFAULT_DATA_DIR)
        x = torch.from_numpy(table[:, :-1].copy()).unsqueeze(1)  # [5000, 1, 40]
        y = torch.from_numpy(table[:, -1].astype(np.int64))
        n = int(args.num_samples * args.train_split)
        return x[:n], y[:n], x[n:], y[n:], len(RAW_TEMPLATES)


MNIST1D = Mnist1dReader()
