"""K cells of one network trained as one: stacked tensors, one fused forward/backward.

- `Pack` stacks the cells' parameters and buffers (`torch.func.stack_module_state`) and
  re-points every cell model's tensors at its slice of the stack (`.data`), so each cell's
  optimizer updates its slice in place and keeps its state and param groups untouched.
- One step = one fused forward over the K per-cell batches, one backward of
  the summed per-cell losses (cell k's gradient is exactly d loss_k / d w_k), each slice's
  `.grad` set from the stacked gradient, then the optimizer step: one over the stack where the
  registry entry has a stacked rule (`optim.stacked`: SGD, momentum, Nesterov, Adam, AdamW,
  each cell's hyperparameters read from its own param groups; its optimizer state holds views
  of the stacked state), else each cell's ordinary `optimizer.step()`. BatchNorm
  running statistics are stacked buffers passed to `functional_call`; vmap updates each cell's
  slice in place. Two-pass optimizers (SAM family) use their two-step protocol (`first_step`,
  `second_step`): all cells ascend, one fused second pass at w + e (running statistics frozen,
  as in `optim.optimizer_step`), then all cells restore and step.
- A cell that leaves (it diverged or stopped early) gets its own copy of its tensors back and
  the stack is rebuilt from the remaining cells (`restack`): masking would keep paying its
  forward/backward and let its BatchNorm statistics drift after it stopped.
- The fused forward is `fused.FusedNet` (grouped convolutions and batched matmuls in a
  contiguous layout) where it covers the model's layers (simple_cnn), else
  `vmap(functional_call)` (BatchNorm, residual networks, any model torch.func can batch).
- `probe` runs one throwaway fused step first: where torch.func or the optimizer cannot run
  packed (an op without a batching rule, an optimizer without the two-step protocol), the
  engine trains every cell on its own instead.

channels_last is not applied: a vmapped conv runs as one grouped conv over K x C channels whose
layout the per-cell format does not control.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from contextlib import nullcontext

import pytorch_optimizer
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from robustbench_opt.config import PER_CELL, TrialConfig
from robustbench_opt.errors import UserError
from robustbench_opt.optim import BuiltOptimizer, frozen_running_stats
from robustbench_opt.optim.stacked import StackedStep
from robustbench_opt.trial.build import build_cells
from robustbench_opt.trial.device import Autocast
from robustbench_opt.trial.fused import FusedNet
from robustbench_opt.trial.single import upcast

# What the cells of one pack must share: every TrialConfig field but lr, weight decay and seed
# (`TrialConfig.pack_key`'s rule).
SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(TrialConfig) if f.name not in PER_CELL)
# What a failed probe step may raise: torch.func / vmap limits, an optimizer that needs a
# closure or lacks the two-step protocol. Anything else is a bug and propagates.
PROBE_ERRORS = (RuntimeError, TypeError, NotImplementedError, AttributeError, ValueError) + (
    pytorch_optimizer.base.exception.NoClosureError,
)


class Pack:
    """K models of one architecture trained as one: stacked tensors, fused forward/backward.

    `models` keep working as ordinary modules: their parameters and buffers are re-pointed at
    their slices of the stack (and get their own copies back in `restack` when they leave), so
    optimizers built over `models[k].parameters()` update the stack in place.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        autocast: Autocast = nullcontext,
        compile: bool = False,
        label_smoothing: float = 0.0,
    ):
        self.label_smoothing = label_smoothing
        self.template = copy.deepcopy(models[0]).to("meta")
        self.autocast = autocast
        self.models: list[nn.Module] = []
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        self._named: list[list[tuple[str, nn.Parameter]]] = []
        self._stacked: StackedStep | None = None  # the cells' optimizers stepped as one
        self._stacked_for: list[int] = []  # ids of the optimizers `_stacked` steps
        self.net = FusedNet.of(self.template)
        self.path = "fused layers" if self.net is not None else "torch.func vmap"
        fused = (
            self._fused_loss if self.net is not None else vmap(self._loss, randomness="different")
        )
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
        # each model's (name, parameter) pairs, listed once: `named_parameters` walks the
        # module tree, which per cell and step cost more than the optimizer steps on CPU
        self._named = [list(model.named_parameters()) for model in self.models]
        self._stacked, self._stacked_for = None, []
        for j, model in enumerate(self.models):
            stacked = {k: v.detach()[j] for k, v in {**params, **buffers}.items()}
            _repoint(model, stacked)

    def _loss(self, params: dict, buffers: dict, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One cell's mean cross-entropy and logits (vmapped over the cells by `forward`)."""
        with self.autocast():
            logits = functional_call(self.template, (params, buffers), (x,))
        return F.cross_entropy(upcast(logits), y, label_smoothing=self.label_smoothing), logits

    def _fused_loss(
        self, params: dict, buffers: dict, inputs: Tensor, targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Every cell's mean cross-entropy [K] and logits through `FusedNet` (no buffers)."""
        assert self.net is not None
        k = inputs.shape[0]
        with self.autocast():
            logits = self.net(params, FusedNet.fold(inputs), k)
        flat = upcast(logits).reshape(-1, logits.shape[-1])
        labels = targets.reshape(-1, *targets.shape[2:])
        losses = F.cross_entropy(
            flat, labels, reduction="none", label_smoothing=self.label_smoothing
        )
        return losses.view(k, -1).mean(dim=1), logits

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
        for j, named in enumerate(self._named):
            for name, param in named:
                grad = self.params[name].grad
                param.grad = None if grad is None else grad[j]

    def step(
        self, optimizers: Sequence[BuiltOptimizer], inputs: Tensor, targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One optimizer step of every cell (`optim.optimizer_step`'s semantics, fused);
        returns the first pass's per-cell losses [K] and logits, detached."""
        if not self.template.training:  # `train()` walks the module tree: not every step
            self.template.train()
        for built in optimizers:
            built.optimizer.zero_grad(set_to_none=True)
        loss, logits = self.forward(inputs, targets)
        self.backward(loss)
        two_pass = [built.info.two_pass for built in optimizers]
        if not any(two_pass):
            self._step_optimizers(optimizers)
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

    def _step_optimizers(self, optimizers: Sequence[BuiltOptimizer]) -> None:
        """One step of every cell's optimizer: as one over the stack where the registry entry
        has a stacked rule (`optim.stacked`) and the groups fit it, else one after another."""
        ids = [id(built) for built in optimizers]
        if ids != self._stacked_for:
            rule = optimizers[0].info.stacked
            named = [dict(pairs) for pairs in self._named]
            plain = [built.optimizer for built in optimizers]
            self._stacked = StackedStep.of(rule, plain, self.params, named)
            self._stacked_for = ids
        if self._stacked is not None:
            self._stacked.step()
            return
        for built in optimizers:
            built.optimizer.step()

    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[list[float], list[float]]:
        """Per-cell mean cross-entropy and accuracy over shared `batches`, in eval mode."""
        self.template.eval()
        k = len(self.models)

        def one(params: dict, buffers: dict, x: Tensor) -> Tensor:
            with self.autocast():
                return functional_call(self.template, (params, buffers), (x,))

        def net(params: dict, buffers: dict, x: Tensor) -> Tensor:
            assert self.net is not None
            with self.autocast():
                return self.net(params, FusedNet.fold_shared(x, k), k)

        fused = net if self.net is not None else vmap(one, in_dims=(0, 0, None))
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


def check_packable(configs: Sequence[TrialConfig]) -> None:
    """UserError naming the first field in which the configs differ but must not."""
    if not configs:
        raise UserError("a trial needs at least one cell; give one or more TrialConfigs")
    first = configs[0]
    for config in configs[1:]:
        for name in SHARED_FIELDS:
            if getattr(config, name) != getattr(first, name):
                raise UserError(
                    f"cells of one pack must share {name}: {getattr(first, name)!r} != "
                    f"{getattr(config, name)!r}; pack cells that differ only in lr, "
                    "weight_decay and seed"
                )


def probe(
    config: TrialConfig, num_classes: int, input_shape: tuple[int, ...], device: torch.device
) -> str | None:
    """One throwaway fused step of two copies of the cell; why packing fails, or None."""
    cells = build_cells([config, config], num_classes, input_shape, device)
    try:
        pack = Pack([cell.model for cell in cells])
        inputs = torch.randn((2, 2, *input_shape), device=device)
        targets = torch.zeros(2, 2, dtype=torch.int64, device=device)
        pack.step([cell.optimizer for cell in cells], inputs, targets)
    except PROBE_ERRORS as error:
        return f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
    return None
