"""One optimizer step, one-pass or two-pass (SAM family), on the typed boundary with `train`.

`train` hands over a closure that runs the forward pass and returns the loss; this module owns
zero_grad, backward and step, so the training loop needs no per-optimizer branches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from robustbench_opt.optim.build import BuiltOptimizer


def optimizer_step(
    model: nn.Module, built: BuiltOptimizer, compute_loss: Callable[[], Tensor]
) -> Tensor:
    """zero_grad, forward-backward, step; returns the (first-pass) loss, detached.

    Two-pass entries (SAM family): the first pass takes the gradient at w and updates the
    BatchNorm running statistics; the optimizer ascends to w + e, the second forward-backward
    runs there with running statistics frozen (batch statistics are still used, as in
    training), then w is restored and the base optimizer steps with the gradient from w + e.
    """
    optimizer = built.optimizer
    optimizer.zero_grad(set_to_none=True)
    loss = compute_loss()
    loss.backward()
    if not built.info.two_pass:
        optimizer.step()
        return loss.detach()

    def second_pass() -> Tensor:
        with frozen_running_stats(model):
            perturbed = compute_loss()
            perturbed.backward()
        return perturbed

    optimizer.step(second_pass)  # first_step (ascend, zero_grad), closure, second_step
    return loss.detach()


@contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers keep normalising with batch statistics but leave their buffers alone.

    In training mode a BatchNorm layer with `track_running_stats=False` normalises with the
    batch statistics, as usual, and neither updates running_mean / running_var nor counts
    num_batches_tracked (setting momentum to 0 would still count it).
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True
