"""One cell's own module with `Pack`'s interface: the stepper of a pack of one.

It runs the model as a trial alone always has: channels_last as the recipe says (on for CUDA by
default), `torch.compile` of the module, bf16 autocast, and `optim.optimizer_step` (one- or
two-pass). Training accuracy counts the first pass's predictions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_opt.optim import BuiltOptimizer, optimizer_step
from robustbench_opt.trial.device import Autocast


def upcast(logits: Tensor) -> Tensor:
    """Low-precision (autocast) logits to float32 for the loss; float64 stays float64."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


class Single:
    """One model stepped on its own; batches come as a pack of one ([1, B, ...])."""

    def __init__(
        self,
        model: nn.Module,
        autocast: Autocast,
        compile: bool,
        channels_last: bool,
        label_smoothing: float = 0.0,
    ) -> None:
        self.label_smoothing = label_smoothing
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(memory_format=self.memory_format)
        self.models = [self.model]
        self.autocast = autocast
        self.forward = torch.compile(self.model) if compile else self.model

    def restack(self, models: Sequence[nn.Module]) -> None:
        """Nothing to rebuild: when its one cell stops, the trial ends."""

    def step(
        self, optimizers: Sequence[BuiltOptimizer], inputs: Tensor, targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One optimizer step; the first pass's loss [1] and logits [1, B, classes], detached."""
        [built] = optimizers
        x = inputs[0].contiguous(memory_format=self.memory_format)
        first: list[Tensor] = []

        def compute_loss() -> Tensor:
            with self.autocast():
                logits = self.forward(x)
            if not first:  # a two-pass optimizer calls this twice; keep the first
                first.append(logits.detach())
            return F.cross_entropy(upcast(logits), targets[0], label_smoothing=self.label_smoothing)

        loss = optimizer_step(self.model, built, compute_loss)
        return loss.reshape(1), first[0].unsqueeze(0)

    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[list[float], list[float]]:
        """Mean cross-entropy and accuracy over `batches`, in eval mode, as lists of one."""
        self.model.eval()
        device = next(self.model.parameters()).device
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        with torch.no_grad():
            for inputs, targets in batches:
                with self.autocast():
                    logits = self.forward(inputs.contiguous(memory_format=self.memory_format))
                loss_sum += F.cross_entropy(upcast(logits), targets, reduction="sum").double()
                correct += (logits.argmax(dim=1) == targets).sum()
                seen += targets.shape[0]
        self.model.train()
        return [loss_sum.item() / seen], [correct.item() / seen]
