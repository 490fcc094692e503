"""Packed training: K grid cells of one network in one process, one fused forward/backward.

`run_packed(configs)` trains K `TrialConfig`s that share data set, model, recipe, optimizer
entry and keywords (they differ in lr, weight decay and seed) and returns one `TrialResult` per
cell, the one `run_trial` would return (same rules: schedules, weight decay off late, early
stopping, divergence; all per cell). Like `run_trial` it knows nothing of Ray, SQL or the CLI.

How (DESIGN.md, "Packed cells"):

- Each cell builds its model exactly as its own trial would (`seed_everything(seed)`, then
  `build_model`), and its optimizer with `build_optimizer` over that model's parameters.
- `Pack` stacks the cells' parameters and buffers (`torch.func.stack_module_state`) and
  re-points every cell model's tensors at its slice of the stack (`.data`), so each cell's
  optimizer updates its slice in place and keeps its state and param groups untouched.
- One step = one `vmap(functional_call)` forward over the K per-cell batches, one backward of
  the summed per-cell losses (cell k's gradient is exactly d loss_k / d w_k), each slice's
  `.grad` set from the stacked gradient, then each cell's ordinary `optimizer.step()`. BatchNorm
  running statistics are stacked buffers passed to `functional_call`; vmap updates each cell's
  slice in place. Two-pass optimizers (SAM family) use their two-step protocol (`first_step`,
  `second_step`): all cells ascend, one fused second pass at w + e (running statistics frozen,
  as in `optimizer_step`), then all cells restore and step.
- Each cell draws its own batches and augmentations from its own seed (`train_batches`, either
  data path), so its data stream is its own trial's.
- A cell that diverges or stops early leaves the stack: the stack is rebuilt from the remaining
  cells (one copy of their tensors) and the cell keeps its own copy. Masking would keep paying
  its forward/backward and let its BatchNorm statistics drift after it stopped; a rebuild costs
  one copy per departing cell and changes no other cell's numbers.
- The pack is probed with one throwaway fused step first. Where torch.func or the optimizer
  cannot run packed (an op without a batching rule, an optimizer without the two-step
  protocol), every cell falls back to an ordinary `run_trial`, with a note saying why.
  Closure-only optimizers (L-BFGS) never get here: the registry refuses to build them.

Speed options: the device-resident data path, bf16 autocast (CUDA) and `compile` (of the fused
vmapped forward; checked on CPU to match eager, BatchNorm statistics and the SAM second pass
included) apply as in `run_trial`. channels_last is not applied (a note says so): a vmapped conv
runs as one grouped conv over K x C channels whose layout the per-cell format does not control.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import pytorch_optimizer
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.optim.lr_scheduler import ReduceLROnPlateau

from robustbench_opt.config import PER_CELL, EpochRecord, Recipe, TrialConfig, TrialResult
from robustbench_opt.data import DataSplits, eval_batches, load_splits, train_batches
from robustbench_opt.data.device import use_device_path
from robustbench_opt.errors import UserError
from robustbench_opt.models import build_model
from robustbench_opt.optim import (
    BuiltOptimizer,
    build_optimizer,
    frozen_running_stats,
    get_info,
    param_groups,
    set_weight_decay,
)
from robustbench_opt.train import (
    DIVERGENCE_CHECK_EVERY,
    EVAL_BATCH_SIZE,
    _autocast,
    _divergence,
    _result,
    check_recipe,
    epochs_to_run,
    lr_factor,
    pick_device,
    run_trial,
    seed_everything,
    should_stop_early,
    upcast,
    weight_decay_on,
)

# What the cells of one pack must share (TrialConfig fields); lr, weight_decay, seed, variant
# and label may differ.
# Every TrialConfig field but lr, weight decay and seed (`TrialConfig.pack_key`'s rule).
SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name not in PER_CELL)
# What a failed probe step may raise: torch.func / vmap limits, an optimizer that needs a
# closure or lacks the two-step protocol. Anything else is a bug and propagates.
PROBE_ERRORS = (RuntimeError, TypeError, NotImplementedError, AttributeError, ValueError) + (
    pytorch_optimizer.base.exception.NoClosureError,
)

EpochHook = Callable[[int, EpochRecord], None]  # (cell index in configs, its epoch record)
ResultHook = Callable[[int, TrialResult], None]  # (cell index in configs, its final result)
Autocast = Callable[[], AbstractContextManager[object]]


class Pack:
    """K models of one architecture trained as one: stacked tensors, fused forward/backward.

    `models` keep working as ordinary modules: their parameters and buffers are re-pointed at
    their slices of the stack (and get their own copies back in `restack` when they leave), so
    optimizers built over `models[k].parameters()` update the stack in place.
    """

    def __init__(
        self, models: Sequence[nn.Module], autocast: Autocast = nullcontext, compile: bool = False
    ):
        self.template = copy.deepcopy(models[0]).to("meta")
        self.autocast = autocast
        self.models: list[nn.Module] = []
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        fused = vmap(self._loss, randomness="different")
        self._fused = torch.compile(fused) if compile else fused
        self.restack(models)

    def restack(self, models: Sequence[nn.Module]) -> None:
        """Stack `models` (a subset of the current ones, or new ones); models that leave keep
        their own copy of their tensors."""
        if [id(m) for m in models] == [id(m) for m in self.models]:
            return
        for model in self.models:
            if all(model is not m for m in models):
                _repoint(model, {k: v.detach().clone() for k, v in _tensors(model).items()})
        params, buffers = stack_module_state(list(models))
        self.models, self.params, self.buffers = list(models), params, buffers
        for j, model in enumerate(self.models):
            stacked = {k: v.detach()[j] for k, v in {**params, **buffers}.items()}
            _repoint(model, stacked)

    def _loss(self, params: dict, buffers: dict, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One cell's mean cross-entropy and logits (vmapped over the cells by `forward`)."""
        with self.autocast():
            logits = functional_call(self.template, (params, buffers), (x,))
        return F.cross_entropy(upcast(logits), y), logits

    def forward(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Per-cell mean cross-entropy [K] and logits [K, B, classes] for per-cell batches
        `inputs` [K, B, ...] and `targets` [K, B] (labels) or [K, B, classes] (soft labels)."""
        return self._fused(self.params, self.buffers, inputs, targets)

    def backward(self, loss: Tensor) -> None:
        """Backward of the summed per-cell losses; each model's parameter gradients become views
        of its slice of the stacked gradient."""
        for stacked in self.params.values():
            stacked.grad = None
        loss.sum().backward()
        for j, model in enumerate(self.models):
            for name, param in model.named_parameters():
                grad = self.params[name].grad
                param.grad = None if grad is None else grad[j]

    def step(
        self,
        optimizers: Sequence[BuiltOptimizer],
        inputs: Tensor,
        targets: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """One optimizer step of every cell (`optim.optimizer_step`'s semantics, fused);
        returns the first pass's per-cell losses [K] and logits, detached."""
        self.template.train()
        for built in optimizers:
            built.optimizer.zero_grad(set_to_none=True)
        loss, logits = self.forward(inputs, targets)
        self.backward(loss)
        two_pass = [built.info.two_pass for built in optimizers]
        if not any(two_pass):
            for built in optimizers:
                built.optimizer.step()
            return loss.detach(), logits.detach()
        if not all(two_pass):
            raise UserError("a pack mixes one-pass and two-pass optimizers; pack one entry only")
        for built in optimizers:  # the SAM family's protocol: ascend to w + e, zero the grads
            built.optimizer.first_step(zero_grad=True)
        with frozen_running_stats(self.template):
            perturbed, _ = self.forward(inputs, targets)
        self.backward(perturbed)
        for built in optimizers:  # restore w, base step with the gradient at w + e
            built.optimizer.second_step()
        return loss.detach(), logits.detach()

    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[list[float], list[float]]:
        """Per-cell mean cross-entropy and accuracy over shared `batches`, in eval mode."""
        self.template.eval()
        k = len(self.models)

        def one(params: dict, buffers: dict, x: Tensor) -> Tensor:
            with self.autocast():
                return functional_call(self.template, (params, buffers), (x,))

        fused = vmap(one, in_dims=(0, 0, None))
        device = next(iter(self.params.values())).device
        loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
        correct = torch.zeros(k, dtype=torch.int64, device=device)
        seen = 0
        with torch.no_grad():
            for inputs, targets in batches:
                logits = upcast(fused(self.params, self.buffers, inputs))
                repeated = targets.expand(k, -1)
                losses = F.cross_entropy(logits.transpose(1, 2), repeated, reduction="none")
                loss_sum += losses.sum(dim=1).double()
                correct += (logits.argmax(dim=2) == repeated).sum(dim=1)
                seen += targets.shape[0]
        self.template.train()
        return (loss_sum / seen).tolist(), (correct.double() / seen).tolist()


def _tensors(model: nn.Module) -> dict[str, Tensor]:
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def _repoint(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Make each parameter and buffer of `model` use `tensors[name]`'s storage; the tensor
    objects (the optimizer's keys) stay the same."""
    for name, tensor in _tensors(model).items():
        tensor.data = tensors[name]


def stack_targets(targets: Sequence[Tensor], num_classes: int) -> Tensor:
    """[K, B] labels, or [K, B, classes] soft labels when any cell's batch is CutMixed (its
    label batches become one-hot rows: the same loss and gradient)."""
    if all(t.ndim == 1 for t in targets):
        return torch.stack(list(targets))
    dtype = next(t.dtype for t in targets if t.ndim == 2)
    soft = [t if t.ndim == 2 else F.one_hot(t, num_classes).to(dtype) for t in targets]
    return torch.stack(soft)


@dataclass
class _Cell:
    """One grid cell's trial state inside a pack (what `run_trial` keeps in locals)."""

    index: int  # position in the configs given to run_packed
    config: TrialConfig
    model: nn.Module
    built: BuiltOptimizer
    n_params: int
    notes: list[str]
    base_lrs: list[float]
    plateau: ReduceLROnPlateau | None
    records: list[EpochRecord] = field(default_factory=list)
    monitored: list[float] = field(default_factory=list)
    initial_loss: float | None = None
    wd_on: bool = True
    diverged_reason: str | None = None
    done: bool = False


def check_packable(configs: Sequence[TrialConfig]) -> None:
    """UserError naming the first field in which the configs differ but must not."""
    if not configs:
        raise UserError("run_packed needs at least one TrialConfig; give one or more cells")
    first = configs[0]
    for config in configs[1:]:
        for name in SHARED_FIELDS:
            if getattr(config, name) != getattr(first, name):
                raise UserError(
                    f"cells of one pack must share {name}: {getattr(first, name)!r} != "
                    f"{getattr(config, name)!r}; pack cells that differ only in lr, "
                    "weight_decay and seed"
                )


def run_packed(
    configs: Sequence[TrialConfig],
    on_epoch: EpochHook | None = None,
    on_result: ResultHook | None = None,
) -> list[TrialResult]:
    """Trains `configs` as one pack; returns their results in order (see module docstring).

    `on_epoch(k, record)` after each epoch of cell k; `on_result(k, result)` as soon as cell k
    is final (it diverged, stopped early or finished), before the other cells go on.
    """
    start = time.perf_counter()
    check_packable(configs)
    recipe = configs[0].recipe
    check_recipe(recipe)
    get_info(configs[0].optimizer)
    device = pick_device(configs[0].device)
    first = configs[0]
    splits = load_splits(first.dataset, first.data_dir, first.download, first.val_fraction)
    recipe = replace(recipe, data_on_device=use_device_path(splits, recipe, device))
    reason = _probe(first, splits, device)
    if reason is not None:
        return _fall_back(configs, reason, on_epoch, on_result)
    k = len(configs)
    cells = [_new_cell(i, config, splits, device, recipe, k) for i, config in enumerate(configs)]
    autocast_notes: list[str] = []
    autocast = _autocast(recipe, device, autocast_notes)
    for cell in cells:
        cell.notes.extend(autocast_notes)
    pack = Pack([cell.model for cell in cells], autocast, recipe.compile)
    epochs = epochs_to_run(recipe, cells[0].built.info.two_pass)
    if epochs != recipe.epochs:
        for cell in cells:
            cell.notes.append(
                f"sam_equal_compute: two-pass optimizer trains {epochs} of {recipe.epochs} epochs"
            )
    eval_size = max(EVAL_BATCH_SIZE, recipe.batch_size)
    results: dict[int, TrialResult] = {}

    def finish(cell: _Cell) -> None:
        cell.done = True
        result = _result(
            cell.config, cell.records, cell.diverged_reason, cell.built, cell.n_params, device,
            cell.notes, start,
        )  # fmt: skip
        results[cell.index] = result
        if on_result is not None:
            on_result(cell.index, result)

    for epoch in range(epochs):
        active = [cell for cell in cells if not cell.done]
        if not active:
            break
        epoch_start = time.perf_counter()
        lrs = [_start_epoch(cell, recipe, epoch, epochs) for cell in active]
        stats = _train_epoch(pack, active, splits, recipe, device, epoch)
        pack.restack([cell.model for cell in active])  # cells that stopped mid-epoch come back
        test = pack.evaluate(eval_batches(splits.test_x, splits.test_y, splits, eval_size, device))
        val = None
        if splits.val_x is not None:
            val = pack.evaluate(eval_batches(splits.val_x, splits.val_y, splits, eval_size, device))
        seconds = time.perf_counter() - epoch_start
        for j, cell in enumerate(active):
            train_loss, train_acc, first_loss = stats[j]
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
            if on_epoch is not None:
                on_epoch(cell.index, record)
            if _end_epoch(cell, record, recipe, epoch, epochs, splits.val_x is None):
                finish(cell)
        remaining = [cell.model for cell in cells if not cell.done]
        if remaining and len(remaining) < len(active):
            pack.restack(remaining)
    for cell in cells:
        if not cell.done:
            finish(cell)
    return [results[i] for i in range(len(configs))]


def _new_cell(
    index: int,
    config: TrialConfig,
    splits: DataSplits,
    device: torch.device,
    recipe: Recipe,
    k: int,
) -> _Cell:
    """The cell's model and optimizer, built exactly as its own `run_trial` builds them."""
    seed_everything(config.seed)
    model = build_model(config.model, splits.num_classes, splits.in_channels, splits.image_size)
    n_params = sum(p.numel() for p in model.parameters())
    model = model.to(device)
    built = build_optimizer(
        param_groups(model, recipe.weight_decay_params), config.optimizer, config.lr,
        config.weight_decay, config.optimizer_kwargs,
    )  # fmt: skip
    notes = [
        f"packed: trained in one process with {k} cells (torch.func vmap, one fused "
        "forward/backward per step; wall_seconds and epoch seconds are the pack's)",
        "data path: "
        + ("device-resident" if recipe.data_on_device else "torchvision loader")
        + "; channels_last off",
    ]
    if recipe.channels_last:
        notes.append("channels_last ignored: not applied to a packed (vmapped) model")
    if recipe.compile:
        notes.append("compile: the fused (vmapped) forward is compiled once per pack size")
    plateau = None
    if recipe.schedule == "plateau":
        plateau = ReduceLROnPlateau(
            built.optimizer, "min", factor=recipe.plateau_factor, patience=recipe.plateau_patience
        )
    base_lrs = [float(group["lr"]) for group in built.optimizer.param_groups]
    return _Cell(index, config, model, built, n_params, notes, base_lrs, plateau)


def _start_epoch(cell: _Cell, recipe: Recipe, epoch: int, epochs: int) -> float:
    """Applies the cell's lr schedule and weight-decay switch; returns the epoch's lr."""
    if cell.plateau is None:
        for group, base_lr in zip(cell.built.optimizer.param_groups, cell.base_lrs, strict=True):
            group["lr"] = base_lr * lr_factor(recipe, epoch, epochs)
    if cell.wd_on and not weight_decay_on(recipe, epoch, epochs):
        set_weight_decay(cell.built, 0.0)
        cell.wd_on = False
        cell.notes.append(f"weight decay switched off from epoch {epoch + 1}")
    return float(cell.built.optimizer.param_groups[0]["lr"])


def _end_epoch(
    cell: _Cell, record: EpochRecord, recipe: Recipe, epoch: int, epochs: int, no_val: bool
) -> bool:
    """Divergence, plateau step and early stopping after an epoch; True when the cell is done."""
    reason = _divergence(record.train_loss, cell.initial_loss, recipe.divergence_factor)
    if reason is not None:
        cell.diverged_reason = f"epoch {epoch + 1}: {reason}"
        return True
    if cell.plateau is not None:
        cell.plateau.step(record.val_loss if record.val_loss is not None else record.train_loss)
    cell.monitored.append(record.val_acc if record.val_acc is not None else record.test_acc)
    patience = recipe.early_stopping_patience
    if epoch + 1 < epochs and should_stop_early(cell.monitored, patience):
        monitor = "test" if no_val else "val"
        cell.notes.append(
            f"early stopping after epoch {epoch + 1}: no {monitor} accuracy gain "
            f"for {patience} epochs"
        )
        return True
    return False


def _train_epoch(
    pack: Pack,
    cells: list[_Cell],
    splits: DataSplits,
    recipe: Recipe,
    device: torch.device,
    epoch: int,
) -> list[tuple[float, float, float]]:
    """One epoch of every cell: (mean train loss, train accuracy, first batch loss) per cell.

    A cell whose running loss is non-finite at a check (every DIVERGENCE_CHECK_EVERY batches,
    as in `run_trial`) stops stepping for the rest of the epoch and leaves the stack.
    """
    streams = [iter(train_batches(splits, recipe, device, c.config.seed, epoch + 1)) for c in cells]
    training = list(range(len(cells)))  # positions in `cells` still stepping this epoch
    k = len(cells)
    loss_sum = torch.zeros(k, dtype=torch.float64, device=device)
    correct = torch.zeros(k, dtype=torch.int64, device=device)
    seen = [0] * k
    first = [math.nan] * k
    index = 0
    while training:
        try:
            batches = [next(streams[j]) for j in training]
        except StopIteration:
            break
        index += 1
        inputs = torch.stack([x for x, _ in batches])
        targets = stack_targets([y for _, y in batches], splits.num_classes)
        rows = torch.tensor(training, device=device)
        losses, logits = pack.step([cells[j].built for j in training], inputs, targets)
        labels = targets if targets.ndim == 2 else targets.argmax(dim=2)
        size = targets.shape[1]
        loss_sum.index_add_(0, rows, losses.double() * size)
        correct.index_add_(0, rows, (logits.argmax(dim=2) == labels).sum(dim=1))
        for j in training:
            seen[j] += size
        if index == 1:
            for j, value in zip(training, losses.tolist(), strict=True):
                first[j] = value
        if index % DIVERGENCE_CHECK_EVERY == 0:
            finite = loss_sum.isfinite().tolist()
            still = [j for j in training if finite[j]]
            if len(still) < len(training):
                training = still
                if training:
                    pack.restack([cells[j].model for j in training])
    if index == 0:
        raise RuntimeError("the training split yielded no batches")
    sums, hits = loss_sum.tolist(), correct.tolist()
    return [(sums[j] / seen[j], hits[j] / seen[j], first[j]) for j in range(k)]


def _probe(config: TrialConfig, splits: DataSplits, device: torch.device) -> str | None:
    """One throwaway fused step of two copies of the model; why packing fails, or None."""
    model = build_model(config.model, splits.num_classes, splits.in_channels, splits.image_size)
    model = model.to(device)
    models = [model, copy.deepcopy(model)]
    try:
        pack = Pack(models)
        optimizers = [
            build_optimizer(
                param_groups(m, config.recipe.weight_decay_params),
                config.optimizer,
                config.lr,
                config.weight_decay,
                config.optimizer_kwargs,
            )  # fmt: skip
            for m in models
        ]
        shape = (2, 2, splits.in_channels, splits.image_size, splits.image_size)
        inputs = torch.randn(shape, device=device)
        targets = torch.zeros(2, 2, dtype=torch.int64, device=device)
        pack.step(optimizers, inputs, targets)
    except PROBE_ERRORS as error:
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
    return None


def _fall_back(
    configs: Sequence[TrialConfig],
    reason: str,
    on_epoch: EpochHook | None,
    on_result: ResultHook | None,
) -> list[TrialResult]:
    """Every cell as an ordinary `run_trial`, with a note saying why it did not run packed."""
    results = []
    for index, config in enumerate(configs):
        hook = None if on_epoch is None else _bind(on_epoch, index)
        result = run_trial(config, on_epoch=hook)
        result.notes.append(f"packing fell back to an ordinary trial: {reason}")
        results.append(result)
        if on_result is not None:
            on_result(index, result)
    return results


def _bind(on_epoch: EpochHook, index: int) -> Callable[[EpochRecord], None]:
    return lambda record: on_epoch(index, record)
