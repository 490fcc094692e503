"""The recipe's rules, all per epoch (t = 0-based epoch index, T = epochs actually trained).

- lr: constant; step (lr * gamma ** #milestones <= t, like torch's MultiStepLR); cosine
  (eq. 17 in epochs: lr * (1 + cos(pi t / T)) / 2, so the first epoch runs at lr); plateau
  (torch's ReduceLROnPlateau on the val loss, or on the train loss without a val split).
  Warmup (W = `warmup_epochs`): the constant/step/cosine lr times (t + 1) / (W + 1) for t < W.
- SAM equal compute: with `recipe.sam_equal_compute`, a two-pass optimizer trains
  T = max(1, epochs // 2) epochs (never more compute than its one-pass baseline); step
  milestones are scaled by T / epochs, the other rules scale with T by construction.
- Weight decay is on for the first ceil(wd_off_fraction * T) epochs and 0 afterwards.
- Early stopping: stop after `early_stopping_patience` epochs without a new best val accuracy,
  or test accuracy when there is no val split (then the stop is chosen on the test set).
- Divergence: a cell diverges when a training batch loss is non-finite (checked every
  `DIVERGENCE_CHECK_EVERY` batches and at the end of each epoch) or an epoch's mean training
  loss exceeds `recipe.divergence_factor` x the initial loss, the loss of the untrained model on
  the first training batch (computed before the first update). A diverged cell evaluates the
  epoch it diverged in, stops with status "diverged" and keeps its measured accuracies.

Pure Python: no torch.
"""

from __future__ import annotations

import math

from robustbench_opt.config import Recipe

DIVERGENCE_CHECK_EVERY = 20  # batches between non-finite checks (each one syncs the device)


def epochs_to_run(recipe: Recipe, two_pass: bool) -> int:
    """Epochs trained: half (floor, at least 1) for a two-pass optimizer at equal compute."""
    if recipe.sam_equal_compute and two_pass:
        return max(1, recipe.epochs // 2)
    return recipe.epochs


def lr_factor(recipe: Recipe, epoch: int, epochs: int) -> float:
    """lr multiplier during 0-based `epoch` of `epochs` for the constant/step/cosine schedules,
    times the linear warmup's (t + 1) / (W + 1) during the first W = `warmup_epochs` epochs."""
    warmup = (epoch + 1) / (recipe.warmup_epochs + 1) if epoch < recipe.warmup_epochs else 1.0
    if recipe.schedule == "step":
        milestones = [round(m * epochs / recipe.epochs) for m in recipe.step_milestones]
        return warmup * recipe.step_gamma ** sum(1 for m in milestones if m <= epoch)
    if recipe.schedule == "cosine":
        return warmup * (1.0 + math.cos(math.pi * epoch / epochs)) / 2.0
    return warmup


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


def divergence(train_loss: float, initial_loss: float | None, factor: float) -> str | None:
    """Why an epoch counts as diverged, or None (rule in the module docstring)."""
    if not math.isfinite(train_loss) or initial_loss is None or not math.isfinite(initial_loss):
        return "non-finite training loss"
    if train_loss > factor * initial_loss:
        return f"mean training loss {train_loss:.4g} > {factor:g} x initial loss {initial_loss:.4g}"
    return None
