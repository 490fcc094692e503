"""One trial end to end: data, model, optimizer, recipe, metrics per epoch.

`run_trial(config)` trains one grid cell and returns what it really ran and measured. It knows
nothing of Ray, SQL or the CLI: callers watch it through `on_epoch` (one `EpochRecord` per
epoch) and `on_batch`. Bad input raises `UserError`; any other exception is a crash.

Recipe rules, all per epoch (t = 0-based epoch index, T = epochs actually trained):

- lr: constant; step (lr * gamma ** #milestones <= t, like torch's MultiStepLR); cosine
  (eq. 17 in epochs: lr * (1 + cos(pi t / T)) / 2, so the first epoch runs at lr); plateau
  (torch's ReduceLROnPlateau on the val loss, or on the train loss without a val split).
- SAM equal compute: with `recipe.sam_equal_compute`, a two-pass optimizer trains
  T = max(1, epochs // 2) epochs (never more compute than its one-pass baseline); step
  milestones are scaled by T / epochs, the other rules scale with T by construction.
- Weight decay is on for the first ceil(wd_off_fraction * T) epochs and 0 afterwards.
- Early stopping: stop after `early_stopping_patience` epochs without a new best val accuracy,
  or test accuracy when there is no val split (then the stop is chosen on the test set).
- Divergence: the trial diverges when a training batch loss is non-finite (checked every
  `DIVERGENCE_CHECK_EVERY` batches and at the end of each epoch) or an epoch's mean training
  loss exceeds `recipe.divergence_factor` x the initial loss, the loss of the untrained model on
  the first training batch (computed before the first update). A diverged trial evaluates the
  epoch it diverged in, stops with status "diverged" and keeps its measured accuracies.

Training accuracy counts the first-pass predictions against the labels (the larger share of
a CutMixed batch's soft label).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import platform
import random
import subprocess
import time
from collections.abc import Callable, Iterable, Sized
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.optim.lr_scheduler import ReduceLROnPlateau

from robustbench_opt import __version__
from robustbench_opt.config import EpochRecord, Recipe, TrialConfig, TrialResult, check_recipe
from robustbench_opt.data import eval_batches, load_splits, train_batches, use_device_path
from robustbench_opt.errors import UserError, unknown
from robustbench_opt.models import build_model
from robustbench_opt.optim import (
    BuiltOptimizer,
    build_optimizer,
    get_info,
    optimizer_step,
    param_groups,
    set_weight_decay,
)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
DIVERGENCE_CHECK_EVERY = 20  # batches between non-finite checks (each one syncs the device)
EVAL_BATCH_SIZE = 512  # images per evaluation batch, at least the training batch size

BatchHook = Callable[[int, int, int, int | None], None]  # (epoch, epochs, batch, batches or None)


def use_channels_last(recipe: Recipe, device: torch.device) -> bool:
    """NHWC memory format as the recipe says; by default on for CUDA only, where it is faster
    and changes no result (a layout, not a different computation)."""
    return recipe.channels_last if recipe.channels_last is not None else device.type == "cuda"


def pick_device(requested: str | None) -> torch.device:
    """The device to train on: `requested`, or cuda, then mps, then cpu when None or "auto"."""
    if requested is None or requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    fix = "set device to auto, cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise unknown("device", requested, DEVICE_CHOICES, fix, ("device",)) from None
    if device.type not in ("cpu", "cuda", "mps"):
        raise unknown("device", requested, DEVICE_CHOICES, fix, ("device",))
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise UserError(
                f"device {requested!r} is not available ({count} CUDA devices visible); "
                "set device to cpu, or to auto to pick automatically",
                ("device",),
            )
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(
            f"device {requested!r} is not available on this machine; set device to cpu, "
            "or to auto to pick automatically",
            ("device",),
        )
    return device


def seed_everything(seed: int) -> None:
    """Seeds python, numpy and torch (every device) so a CPU trial is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epochs_to_run(recipe: Recipe, two_pass: bool) -> int:
    """Epochs trained: half (floor, at least 1) for a two-pass optimizer at equal compute."""
    if recipe.sam_equal_compute and two_pass:
        return max(1, recipe.epochs // 2)
    return recipe.epochs


def lr_factor(recipe: Recipe, epoch: int, epochs: int) -> float:
    """lr multiplier during 0-based `epoch` of `epochs` for the constant/step/cosine schedules."""
    if recipe.schedule == "step":
        milestones = [round(m * epochs / recipe.epochs) for m in recipe.step_milestones]
        return recipe.step_gamma ** sum(1 for m in milestones if m <= epoch)
    if recipe.schedule == "cosine":
        return (1.0 + math.cos(math.pi * epoch / epochs)) / 2.0
    return 1.0


def weight_decay_on(recipe: Recipe, epoch: int, epochs: int) -> bool:
    """Whether weight decay applies during 0-based `epoch` of `epochs`."""
    if recipe.wd_off_fraction is None:
        return True
    return epoch < math.ceil(recipe.wd_off_fraction * epochs)


def should_stop_early(accuracies: list[float], patience: int | None) -> bool:
    """True when the last `patience` epochs brought no gain over the best accuracy before them."""
    if patience is None or len(accuracies) <= patience:
        return False
    return max(accuracies[-patience:]) <= max(accuracies[:-patience])


def package_versions() -> dict[str, str]:
    """Versions of python and the packages a trial's numbers depend on."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pytorch-optimizer": importlib.metadata.version("pytorch-optimizer"),
        "robustbench-opt": __version__,
        "robustbench-opt-code": code_identity(),
    }


PACKAGE_DIR = Path(__file__).resolve().parent


@cache
def code_identity(package_dir: Path = PACKAGE_DIR) -> str:
    """What code ran: `git COMMIT` (`+dirty` when the package's files differ from it) when the
    package is a git checkout's tracked files, else `sha256 DIGEST` of its .py files."""
    git = partial(subprocess.run, cwd=package_dir, capture_output=True, text=True, timeout=30)
    try:
        tracked = git(["git", "ls-files", "--error-unmatch", "__init__.py"]).returncode == 0
        commit = git(["git", "rev-parse", "HEAD"]).stdout.strip() if tracked else ""
        changed = git(["git", "status", "--porcelain", "--", "."]).stdout.strip() if commit else ""
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        commit = changed = ""
    if commit:
        return f"git {commit}" + ("+dirty" if changed else "")
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return f"sha256 {digest.hexdigest()}"


def describe_device(device: torch.device) -> str:
    """`cuda:0 (NVIDIA H100 80GB HBM3)`, `cpu (x86_64, 2 threads)`, `mps`."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)


def run_trial(
    config: TrialConfig,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    on_batch: BatchHook | None = None,
) -> TrialResult:
    """Trains and evaluates one grid cell; returns a completed or diverged `TrialResult`."""
    start = time.perf_counter()
    recipe = config.recipe
    check_recipe(recipe)
    get_info(config.optimizer)  # fail on an unknown name before loading data
    device = pick_device(config.device)
    seed_everything(config.seed)
    # The split seed stays load_splits' fixed default: every trial seed sees the same images.
    splits = load_splits(config.dataset, config.data_dir, config.download, config.val_fraction)
    model = build_model(config.model, splits.num_classes, splits.in_channels, splits.image_size)
    n_params = sum(p.numel() for p in model.parameters())
    model = model.to(device)
    # Decide the data path once: the auto rule reads free device memory, which this trial's
    # own data, model and activations then take, so asking again each epoch could flip it.
    recipe = replace(recipe, data_on_device=use_device_path(splits, recipe, device))
    channels_last = use_channels_last(recipe, device)
    notes = [
        "data path: "
        + ("device-resident" if recipe.data_on_device else "torchvision loader")
        + f"; channels_last {'on' if channels_last else 'off'}"
    ]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    built = build_optimizer(
        param_groups(model, recipe.weight_decay_params),
        config.optimizer,
        config.lr,
        config.weight_decay,
        config.optimizer_kwargs,
    )
    forward: Callable[[torch.Tensor], torch.Tensor] = (
        torch.compile(model) if recipe.compile else model
    )
    autocast = _autocast(recipe, device, notes)
    epochs = epochs_to_run(recipe, built.info.two_pass)
    if epochs != recipe.epochs:
        notes.append(
            f"sam_equal_compute: two-pass optimizer trains {epochs} of {recipe.epochs} epochs"
        )
    base_lrs = [float(group["lr"]) for group in built.optimizer.param_groups]
    plateau = None
    if recipe.schedule == "plateau":
        plateau = ReduceLROnPlateau(
            built.optimizer, "min", factor=recipe.plateau_factor, patience=recipe.plateau_patience
        )
    eval_size = max(EVAL_BATCH_SIZE, recipe.batch_size)
    monitor = "val" if splits.val_x is not None else "test"

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        batches = eval_batches(x, y, splits, eval_size, device)
        return _evaluate(model, forward, ((prepare(b), t) for b, t in batches), autocast, device)

    records: list[EpochRecord] = []
    diverged_reason: str | None = None
    initial_loss: float | None = None
    monitored: list[float] = []  # val accuracy per epoch, or test accuracy without a val split
    wd_on = True
    for epoch in range(epochs):
        epoch_start = time.perf_counter()
        if plateau is None:
            for group, base_lr in zip(built.optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = base_lr * lr_factor(recipe, epoch, epochs)
        if wd_on and not weight_decay_on(recipe, epoch, epochs):
            set_weight_decay(built, 0.0)
            wd_on = False
            notes.append(f"weight decay switched off from epoch {epoch + 1}")
        lr = float(built.optimizer.param_groups[0]["lr"])
        batches = train_batches(splits, recipe, device, config.seed, epoch + 1)
        report = partial(on_batch, epoch + 1, epochs) if on_batch is not None else None
        stats = _train_epoch(model, forward, built, batches, prepare, autocast, report)
        if initial_loss is None:
            initial_loss = stats.first_loss
        train_loss = stats.loss
        test_loss, test_acc = evaluate(splits.test_x, splits.test_y)
        val_loss = val_acc = None
        if splits.val_x is not None:
            val_loss, val_acc = evaluate(splits.val_x, splits.val_y)
        record = EpochRecord(
            epoch=epoch + 1,
            train_loss=train_loss,
            train_acc=stats.acc,
            test_loss=test_loss,
            test_acc=test_acc,
            lr=lr,
            seconds=time.perf_counter() - epoch_start,
            val_loss=val_loss,
            val_acc=val_acc,
        )
        records.append(record)
        if on_epoch is not None:
            on_epoch(record)
        diverged_reason = _divergence(train_loss, initial_loss, recipe.divergence_factor)
        if diverged_reason is not None:
            diverged_reason = f"epoch {epoch + 1}: {diverged_reason}"
            break
        if plateau is not None:
            plateau.step(val_loss if val_loss is not None else train_loss)
        monitored.append(val_acc if val_acc is not None else test_acc)
        patience = recipe.early_stopping_patience
        if epoch + 1 < epochs and should_stop_early(monitored, patience):
            notes.append(
                f"early stopping after epoch {epoch + 1}: no {monitor} accuracy gain "
                f"for {patience} epochs"
            )
            break
    return _result(config, records, diverged_reason, built, n_params, device, notes, start)


@dataclass(frozen=True)
class _EpochStats:
    """Mean training loss and accuracy of one epoch, and the loss of its first batch."""

    loss: float
    acc: float
    first_loss: float


def _train_epoch(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    built: BuiltOptimizer,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    prepare: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], AbstractContextManager[object]],
    report: Callable[[int, int | None], None] | None,
) -> _EpochStats:
    """One pass over the training batches; stops at the first check that finds a bad loss.

    `report(batch, batches)` is called after every batch (batches is None when unknown).
    """
    model.train()
    n_batches = len(batches) if isinstance(batches, Sized) else None
    loss_sum: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    seen = 0
    first_loss = math.nan
    for index, (inputs, targets) in enumerate(batches, start=1):
        inputs = prepare(inputs)
        first_logits: list[torch.Tensor] = []
        compute_loss = _loss_fn(forward, autocast, inputs, targets, first_logits)
        loss = optimizer_step(model, built, compute_loss).detach().double()
        labels = targets if targets.ndim == 1 else targets.argmax(dim=1)  # CutMix: major class
        hits = (first_logits[0].argmax(dim=1) == labels).sum()
        batch = targets.shape[0]
        loss_sum = loss * batch if loss_sum is None else loss_sum + loss * batch
        correct = hits if correct is None else correct + hits
        seen += batch
        if index == 1:
            first_loss = loss.item()
        if report is not None:
            report(index, n_batches)
        if index % DIVERGENCE_CHECK_EVERY == 0 and not math.isfinite(loss_sum.item()):
            break
    if loss_sum is None or correct is None:
        raise RuntimeError("the training split yielded no batches")
    return _EpochStats(loss_sum.item() / seen, correct.item() / seen, first_loss)


def _loss_fn(
    forward: Callable[[torch.Tensor], torch.Tensor],
    autocast: Callable[[], AbstractContextManager[object]],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    first_logits: list[torch.Tensor],
) -> Callable[[], torch.Tensor]:
    """The batch loss closure for `optimizer_step`; keeps the first pass's logits for accuracy."""

    def compute_loss() -> torch.Tensor:
        with autocast():
            logits = forward(inputs)
        if not first_logits:  # a two-pass optimizer calls this twice; keep the first
            first_logits.append(logits.detach())
        return F.cross_entropy(upcast(logits), targets)

    return compute_loss


def _evaluate(
    model: nn.Module,
    forward: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    autocast: Callable[[], AbstractContextManager[object]],
    device: torch.device,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over `batches`, in eval mode."""
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    with torch.no_grad():
        for inputs, targets in batches:
            with autocast():
                logits = forward(inputs)
            loss_sum += F.cross_entropy(upcast(logits), targets, reduction="sum").double()
            correct += (logits.argmax(dim=1) == targets).sum()
            seen += targets.shape[0]
    return loss_sum.item() / seen, correct.item() / seen


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Low-precision (autocast) logits to float32 for the loss; float64 stays float64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _autocast(
    recipe: Recipe, device: torch.device, notes: list[str]
) -> Callable[[], AbstractContextManager[object]]:
    """bf16 autocast on CUDA when asked; elsewhere a no-op, with a note saying it was ignored."""
    if not recipe.amp_bf16:
        return nullcontext
    if device.type != "cuda":
        notes.append(f"amp_bf16 ignored on {device.type}: bf16 autocast is CUDA-only here")
        return nullcontext
    return lambda: torch.autocast("cuda", dtype=torch.bfloat16)


def _divergence(train_loss: float, initial_loss: float | None, factor: float) -> str | None:
    """Why an epoch counts as diverged, or None (rule in the module docstring)."""
    if not math.isfinite(train_loss) or initial_loss is None or not math.isfinite(initial_loss):
        return "non-finite training loss"
    if train_loss > factor * initial_loss:
        return f"mean training loss {train_loss:.4g} > {factor:g} x initial loss {initial_loss:.4g}"
    return None


def _result(
    config: TrialConfig,
    records: list[EpochRecord],
    diverged_reason: str | None,
    built: BuiltOptimizer,
    n_params: int,
    device: torch.device,
    notes: list[str],
    start: float,
) -> TrialResult:
    """Summarises the epoch records into a TrialResult."""
    best = max(records, key=lambda r: r.test_acc)  # first epoch with the highest test accuracy
    with_val = [r for r in records if r.val_acc is not None]
    best_val = max(with_val, key=lambda r: r.val_acc or 0.0) if with_val else None
    return TrialResult(
        status="diverged" if diverged_reason else "completed",
        epochs=records,
        final_test_acc=records[-1].test_acc,
        best_test_acc=best.test_acc,
        best_epoch=best.epoch,
        test_acc_at_best_val=best_val.test_acc if best_val else None,
        best_val_epoch=best_val.epoch if best_val else None,
        diverged_reason=diverged_reason,
        optimizer_kwargs=json.loads(json.dumps(built.kwargs, default=str)),  # JSON values
        weight_decay_mode=built.info.weight_decay_mode,
        n_params=n_params,
        device=describe_device(device),
        versions=package_versions(),
        wall_seconds=time.perf_counter() - start,
        config=config.to_dict(),
        notes=notes,
        weight_decay_params=config.recipe.weight_decay_params,
        host=platform.node(),
    )
