"""The trial engine: one epoch driver over a set of cells. A single cell is a pack of one.

Longer than 400 lines: the one epoch driver, written once for one cell and for a pack, with
the rules it applies per cell; splitting it would split the loop.

`train_cells(configs)` trains cells that share data set, model, recipe, optimizer entry and
keywords (they differ in lr, weight decay and seed) and returns one `TrialResult` per cell.
The schedule, weight decay off late, early stopping, divergence and evaluation (`rules`) are
written once, here, for every cell of the set:

- Each cell builds its model and optimizer exactly as it would alone (`build.build_cells`) and
  draws its own batches and augmentations from its own seed, so a cell's numbers are its own
  whether it trains alone or packed; it lands as its own result.
- The stepper is `single.Single` for one cell (the module itself: channels_last, compile) and
  `pack.Pack` for several (one vmapped forward/backward per step). A cell that diverges or stops
  early is final at once (`on_result`) and leaves the stack; the others go on.
- A pack is probed with one throwaway fused step first; where it cannot run packed, every cell
  trains on its own, with a note saying why.
- Run-time decisions (data path, memory format, pack size, threads) are made once at the start
  and recorded in `TrialResult.runtime`, beside the recipe the user asked for.

It knows nothing of Ray, SQL or the CLI: callers watch it through the hooks. Bad input raises
`UserError`; any other exception is a crash. Training accuracy counts the first pass's
predictions against the labels (the larger share of a CutMixed batch's soft label).
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau

from robustbench_opt.config import EpochRecord, Recipe, TrialConfig, TrialResult, check_recipe
from robustbench_opt.data import DataSplits, eval_batches, load_splits, train_batches
from robustbench_opt.data.device import use_device_path
from robustbench_opt.datasets import check_augmentation, dataset_info
from robustbench_opt.models import check_fits
from robustbench_opt.optim import get_info, set_weight_decay
from robustbench_opt.trial.build import BuiltCell, build_cells
from robustbench_opt.trial.device import (
    autocast,
    describe_device,
    keep_cpu_heap,
    pick_device,
    use_channels_last,
)
from robustbench_opt.trial.hooks import BatchHook, EpochHook, ResultHook
from robustbench_opt.trial.pack import Pack, check_packable, probe, stack_targets
from robustbench_opt.trial.provenance import package_versions
from robustbench_opt.trial.rules import (
    DIVERGENCE_CHECK_EVERY,
    divergence,
    epochs_to_run,
    lr_factor,
    should_stop_early,
    weight_decay_on,
)
from robustbench_opt.trial.single import Single

EVAL_BATCH_SIZE = 512  # images per evaluation batch, at least the training batch size


@dataclass(frozen=True)
class _Hooks:
    on_epoch: EpochHook | None = None
    on_result: ResultHook | None = None
    on_batch: BatchHook | None = None


def run_trial(
    config: TrialConfig,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    on_batch: BatchHook | None = None,
) -> TrialResult:
    """Trains and evaluates one cell (a pack of one); returns a completed or diverged result."""
    epoch_hook = None if on_epoch is None else lambda k, record: on_epoch(record)
    [result] = train_cells([config], on_epoch=epoch_hook, on_batch=on_batch)
    return result


def train_cells(
    configs: Sequence[TrialConfig],
    on_epoch: EpochHook | None = None,
    on_result: ResultHook | None = None,
    on_batch: BatchHook | None = None,
) -> list[TrialResult]:
    """Trains `configs` as one set (module docstring); returns their results in order.

    `on_epoch(k, record)` after each epoch of cell k; `on_result(k, result)` as soon as cell k
    is final (it diverged, stopped early or finished), before the other cells go on;
    `on_batch(epoch, epochs, batch, batches)` after every training step.
    """
    start = time.perf_counter()
    check_packable(configs)
    first = configs[0]
    check_recipe(first.recipe)
    get_info(first.optimizer)  # fail on an unknown name before loading data
    info = dataset_info(first.dataset)
    check_fits(first.model, info.shape, info.name)  # and on a model that cannot take the data
    check_augmentation(info.name, info.shape, first.recipe.augment, first.recipe.cutmix_prob)
    device = pick_device(first.device)
    # The split seed stays load_splits' fixed default: every trial seed sees the same images.
    splits = load_splits(first.dataset, first.data_dir, first.download, first.val_fraction)
    # Decide the data path once: the auto rule reads free device memory, which this trial's
    # own data, model and activations then take, so asking again each epoch could flip it.
    on_device = use_device_path(splits, first.recipe, device)
    shape = splits.shape
    hooks = _Hooks(on_epoch, on_result, on_batch)
    reason = probe(first, splits.num_classes, shape, device) if len(configs) > 1 else None
    if reason is None:
        return Trial(configs, splits, device, on_device, start).run(hooks)
    results = []
    for k, config in enumerate(configs):  # each cell on its own, one after another
        alone = _Hooks(
            None if on_epoch is None else lambda _, record, k=k: on_epoch(k, record),
            None if on_result is None else lambda _, result, k=k: on_result(k, result),
            on_batch,
        )
        note = f"packing fell back to an ordinary trial: {reason}"
        trial = Trial([config], splits, device, on_device, time.perf_counter(), [note])
        results.extend(trial.run(alone))
    return results


@dataclass
class _Cell:
    """One cell's trial state while it trains."""

    index: int  # position in the configs given to train_cells
    built: BuiltCell
    notes: list[str]
    base_lrs: list[float]
    plateau: ReduceLROnPlateau | None
    records: list[EpochRecord] = field(default_factory=list)
    monitored: list[float] = field(default_factory=list)  # val acc per epoch, else test acc
    initial_loss: float | None = None
    wd_on: bool = True
    diverged_reason: str | None = None
    done: bool = False

    @property
    def config(self) -> TrialConfig:
        return self.built.config

    @property
    def model(self) -> torch.nn.Module:
        return self.built.model


class Trial:
    """The epoch driver of one set of cells (a pack, or a pack of one): `run` trains them to
    the end; `train_epoch` is one training epoch alone (what `bench` times)."""

    def __init__(
        self,
        configs: Sequence[TrialConfig],
        splits: DataSplits,
        device: torch.device,
        on_device: bool,
        start: float,
        notes: Sequence[str] = (),
    ) -> None:
        self.recipe = recipe = configs[0].recipe
        self.splits, self.device, self.on_device, self.start = splits, device, on_device, start
        k = len(configs)
        context, autocast_note = autocast(recipe, device)
        channels_last = k == 1 and use_channels_last(recipe, device)
        built = build_cells(configs, splits.num_classes, splits.shape, device)
        self.runtime: dict[str, Any] = {
            "pack_size": k,
            "data_on_device": on_device,
            "channels_last": channels_last,
            "compile": recipe.compile,
            "threads": torch.get_num_threads(),
            "cpu_heap_kept": device.type == "cpu" and keep_cpu_heap(),
        }
        shared = [
            "data path: "
            + ("device-resident" if on_device else "torchvision loader")
            + f"; channels_last {'on' if channels_last else 'off'}"
        ]
        if k == 1:
            self.stepper: Single | Pack = Single(
                built[0].model, context, recipe.compile, channels_last, recipe.label_smoothing
            )
        else:
            self.stepper = Pack(
                [cell.model for cell in built], context, recipe.compile, recipe.label_smoothing
            )
            shared.insert(0, f"packed: trained in one process with {k} cells ("
                          f"{self.stepper.path}, one fused forward/backward per step; "
                          "wall_seconds and epoch seconds are the pack's)")  # fmt: skip
            if recipe.channels_last:
                shared.append("channels_last ignored: not applied to a packed model")
            if recipe.compile:
                shared.append("compile: the fused (vmapped) forward is compiled once per pack size")
        if autocast_note:
            shared.append(autocast_note)
        self.epochs = epochs_to_run(recipe, built[0].optimizer.info.two_pass)
        if self.epochs != recipe.epochs:
            shared.append(
                f"sam_equal_compute: two-pass optimizer trains {self.epochs} of {recipe.epochs} "
                "epochs"
            )
        shared.extend(notes)
        self.cells = [_new_cell(i, cell, shared) for i, cell in enumerate(built)]
        self.eval_size = max(EVAL_BATCH_SIZE, recipe.batch_size)

    def run(self, hooks: _Hooks) -> list[TrialResult]:
        results: dict[int, TrialResult] = {}
        for epoch in range(self.epochs):
            active = [cell for cell in self.cells if not cell.done]
            if not active:
                break
            epoch_start = time.perf_counter()
            lrs = [_start_epoch(cell, self.recipe, epoch, self.epochs) for cell in active]
            report = None if hooks.on_batch is None else partial(hooks.on_batch, epoch + 1,
                                                                 self.epochs)  # fmt: skip
            stats = self._train_epoch(active, epoch, report)
            self.stepper.restack([cell.model for cell in active])  # back for eval
            test = self._evaluate(self.splits.test_x, self.splits.test_y)
            val = None
            if self.splits.val_x is not None:
                val = self._evaluate(self.splits.val_x, self.splits.val_y)
            seconds = time.perf_counter() - epoch_start
            for j, cell in enumerate(active):
                train_loss, train_acc, first_loss, _ = stats[j]
                if cell.initial_loss is None:
                    cell.initial_loss = first_loss
                record = EpochRecord(
                    epoch=epoch + 1,
                    train_loss=train_loss,
                    train_acc=train_acc,
                    test_loss=test[0][j],
                    test_acc=test[1][j],
                    lr=lrs[j],
                    seconds=seconds,
                    val_loss=val[0][j] if val else None,
                    val_acc=val[1][j] if val else None,
                )
                cell.records.append(record)
                if hooks.on_epoch is not None:
                    hooks.on_epoch(cell.index, record)
                if _end_epoch(cell, record, self.recipe, epoch, self.epochs):
                    self._finish(cell, results, hooks)
            remaining = [cell for cell in self.cells if not cell.done]
            if remaining and len(remaining) < len(active):
                self.stepper.restack([cell.model for cell in remaining])
        for cell in self.cells:
            if not cell.done:
                self._finish(cell, results, hooks)
        return [results[cell.index] for cell in self.cells]

    def train_epoch(self, epoch: int, report: Callable[[int, int | None], None] | None) -> int:
        """Training epoch `epoch` (0-based) of every cell, without evaluation, schedule or
        records; returns the images trained, summed over the cells."""
        return sum(seen for *_, seen in self._train_epoch(self.cells, epoch, report))

    def _train_epoch(
        self, cells: list[_Cell], epoch: int, report: Callable[[int, int | None], None] | None
    ) -> list[tuple[float, float, float, int]]:
        """One epoch of every cell: (mean train loss, train accuracy, first batch loss, images)
        each.

        A cell whose running loss is non-finite at a check (every DIVERGENCE_CHECK_EVERY
        batches) stops stepping for the rest of the epoch and leaves the stack.
        """
        streams = [
            train_batches(
                self.splits, self.recipe, self.device, c.config.seed, epoch + 1, self.on_device
            )  # fmt: skip
            for c in cells
        ]
        n_batches = len(streams[0]) if isinstance(streams[0], Sized) else None
        iterators = [iter(stream) for stream in streams]
        k = len(cells)
        training = list(range(k))  # positions in `cells` still stepping this epoch
        rows = torch.arange(k, device=self.device)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=self.device)
        correct = torch.zeros(k, dtype=torch.int64, device=self.device)
        seen = [0] * k
        first = [math.nan] * k
        index = 0
        while training:
            try:
                batches = [next(iterators[j]) for j in training]
            except StopIteration:
                break
            index += 1
            inputs = _stack([x for x, _ in batches])
            targets = stack_targets([y for _, y in batches], self.splits.num_classes)
            optimizers = [cells[j].built.optimizer for j in training]
            losses, logits = self.stepper.step(optimizers, inputs, targets)
            labels = targets if targets.ndim == 2 else targets.argmax(dim=2)  # CutMix: major
            size = targets.shape[1]
            loss_sum.index_add_(0, rows, losses.double() * size)
            correct.index_add_(0, rows, (logits.argmax(dim=2) == labels).sum(dim=1))
            for j in training:
                seen[j] += size
            if index == 1:
                for j, value in zip(training, losses.tolist(), strict=True):
                    first[j] = value
            if report is not None:
                report(index, n_batches)
            if index % DIVERGENCE_CHECK_EVERY == 0:
                finite = loss_sum.isfinite().tolist()
                still = [j for j in training if finite[j]]
                if len(still) < len(training):
                    training = still
                    rows = torch.tensor(training, device=self.device)
                    if training:
                        self.stepper.restack([cells[j].model for j in training])
        if index == 0:
            raise RuntimeError("the training split yielded no batches")
        sums, hits = loss_sum.tolist(), correct.tolist()
        return [(sums[j] / seen[j], hits[j] / seen[j], first[j], seen[j]) for j in range(k)]

    def _evaluate(self, x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
        batches = eval_batches(x, y, self.splits, self.eval_size, self.device)
        return self.stepper.evaluate(batches)

    def _finish(self, cell: _Cell, results: dict[int, TrialResult], hooks: _Hooks) -> None:
        cell.done = True
        result = _summary(cell, self.device, self.start, self.runtime)
        results[cell.index] = result
        if hooks.on_result is not None:
            hooks.on_result(cell.index, result)


def _stack(inputs: Sequence[Tensor]) -> Tensor:
    """[K, B, ...] from K per-cell batches (a view for a pack of one)."""
    return inputs[0].unsqueeze(0) if len(inputs) == 1 else torch.stack(list(inputs))


def _new_cell(index: int, built: BuiltCell, notes: Sequence[str]) -> _Cell:
    recipe, optimizer = built.config.recipe, built.optimizer.optimizer
    plateau = None
    if recipe.schedule == "plateau":
        plateau = ReduceLROnPlateau(
            optimizer, "min", factor=recipe.plateau_factor, patience=recipe.plateau_patience
        )
    base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
    return _Cell(index, built, list(notes), base_lrs, plateau)


def _start_epoch(cell: _Cell, recipe: Recipe, epoch: int, epochs: int) -> float:
    """Applies the cell's lr schedule and weight-decay switch; returns the epoch's lr."""
    optimizer = cell.built.optimizer
    if cell.plateau is None:
        for group, base_lr in zip(optimizer.optimizer.param_groups, cell.base_lrs, strict=True):
            group["lr"] = base_lr * lr_factor(recipe, epoch, epochs)
    if cell.wd_on and not weight_decay_on(recipe, epoch, epochs):
        set_weight_decay(optimizer, 0.0)
        cell.wd_on = False
        cell.notes.append(f"weight decay switched off from epoch {epoch + 1}")
    return float(optimizer.optimizer.param_groups[0]["lr"])


def _end_epoch(cell: _Cell, record: EpochRecord, recipe: Recipe, epoch: int, epochs: int) -> bool:
    """Divergence, plateau step and early stopping after an epoch; True when the cell is done."""
    reason = divergence(record.train_loss, cell.initial_loss, recipe.divergence_factor)
    if reason is not None:
        cell.diverged_reason = f"epoch {epoch + 1}: {reason}"
        return True
    if cell.plateau is not None:
        cell.plateau.step(record.val_loss if record.val_loss is not None else record.train_loss)
    cell.monitored.append(record.val_acc if record.val_acc is not None else record.test_acc)
    patience = recipe.early_stopping_patience
    if epoch + 1 < epochs and should_stop_early(cell.monitored, patience):
        monitor = "val" if record.val_acc is not None else "test"
        cell.notes.append(
            f"early stopping after epoch {epoch + 1}: no {monitor} accuracy gain "
            f"for {patience} epochs"
        )
        return True
    return False


def _summary(
    cell: _Cell, device: torch.device, start: float, runtime: dict[str, Any]
) -> TrialResult:
    """A finished cell's epoch records summarised into its TrialResult."""
    records, built = cell.records, cell.built
    best = max(records, key=lambda r: r.test_acc)  # first epoch with the highest test accuracy
    with_val = [r for r in records if r.val_acc is not None]
    best_val = max(with_val, key=lambda r: r.val_acc or 0.0) if with_val else None
    return TrialResult(
        status="diverged" if cell.diverged_reason else "completed",
        epochs=records,
        final_test_acc=records[-1].test_acc,
        best_test_acc=best.test_acc,
        best_epoch=best.epoch,
        test_acc_at_best_val=best_val.test_acc if best_val else None,
        best_val_epoch=best_val.epoch if best_val else None,
        diverged_reason=cell.diverged_reason,
        optimizer_kwargs=json.loads(json.dumps(built.optimizer.kwargs, default=str)),
        weight_decay_mode=built.optimizer.info.weight_decay_mode,
        n_params=built.n_params,
        device=describe_device(device),
        versions=package_versions(),
        wall_seconds=time.perf_counter() - start,
        config=cell.config.to_dict(),
        notes=cell.notes,
        weight_decay_params=cell.config.recipe.weight_decay_params,
        host=platform.node(),
        runtime=runtime,
    )
