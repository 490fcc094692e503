"""K networks of one layer-by-layer architecture run as one: grouped convolutions, batched
matmuls, in a layout where every operation stays contiguous.

vmap runs a pack's convolution as one grouped convolution too, but it leaves the cells' batch
dimension where the per-cell code put it, so the max-pools, ReLUs and their backwards that
follow run on strided views (measured on CPU, simple_cnn on digits, K = 6: a vmapped
forward/backward took as long as the K cells one after another, most of it in max-pool and
threshold-backward on those views). Here activations are laid out as torch's own kernels want
them:

- image stages as [B, K*C, H, W] in channels_last memory (cell k owns channels k*C .. k*C +
  C - 1; on CPU a channels_last max-pool with its indices took a fifth of the time of a
  contiguous one, measured at K = 6): a Conv2d is one
  grouped convolution (weights [K*out, in/groups, kh, kw], groups K*groups), ReLU and
  MaxPool2d act per channel, so on each cell's channels exactly as alone;
- after Flatten (of all but the batch dimension), features as [K, B, F]: a Linear is one
  `baddbmm` with weights [K, out, F]. Flatten of cell k's [B, C, H, W] is row k of
  [B, K, C*H*W], so each cell sees its own features in its own order.

`FusedNet.of(model)` covers a model built of these layers applied in order: an nn.Sequential
(nested ones flatten), or a module whose class sets `SEQUENTIAL_CHILDREN = True` (its forward
applies its children in order, e.g. `models.cnn.SimpleCNN`). Anything else (BatchNorm, residual
blocks, other layers or options) returns None and the pack keeps vmap.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FusedNet:
    """A pack's forward as one sequence of fused operations over stacked parameters."""

    def __init__(self, layers: list[tuple[str, nn.Module]]):
        self.layers = _pool_before_relu(layers)

    @classmethod
    def of(cls, model: nn.Module) -> FusedNet | None:
        """The fused form of `model`, or None when one of its layers is not covered."""
        layers = _leaves(model, "")
        if layers is None or not all(_covered(m) for _, m in layers):
            return None
        flat = False  # images until a Flatten, then features
        for _, layer in layers:
            if isinstance(layer, nn.Flatten):
                if flat:
                    return None
                flat = True
            elif isinstance(layer, nn.Linear) != flat and not isinstance(layer, nn.ReLU):
                return None  # a Linear on images, or a Conv2d / MaxPool2d on features
        return cls(layers) if flat else None

    @staticmethod
    def fold(inputs: Tensor) -> Tensor:
        """Per-cell images [K, B, C, H, W] as [B, K*C, H, W]."""
        k, b, c, *rest = inputs.shape
        folded = inputs.transpose(0, 1).reshape(b, k * c, *rest)
        return folded.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def fold_shared(inputs: Tensor, k: int) -> Tensor:
        """Images [B, C, H, W] that every one of `k` cells sees, as [B, K*C, H, W]."""
        return inputs.repeat(1, k, 1, 1).contiguous(memory_format=torch.channels_last)

    def __call__(self, params: Mapping[str, Tensor], x: Tensor, k: int) -> Tensor:
        """Logits [K, B, classes] of the cells whose stacked parameters are `params`, for
        folded images `x` (`fold` / `fold_shared`)."""
        for name, layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                weight = params[f"{name}weight"]
                bias = params.get(f"{name}bias")
                x = F.conv2d(
                    x,
                    weight.reshape(-1, *weight.shape[2:]),
                    None if bias is None else bias.reshape(-1),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    layer.groups * k,
                )
            elif isinstance(layer, nn.Linear):
                weight = params[f"{name}weight"]  # [K, out, F]
                bias = params.get(f"{name}bias")
                if bias is None:
                    x = torch.bmm(x, weight.transpose(1, 2))
                else:
                    x = torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
            elif isinstance(layer, nn.ReLU):
                x = F.relu(x, inplace=layer.inplace)
            elif isinstance(layer, nn.MaxPool2d):
                x = F.max_pool2d(
                    x,
                    layer.kernel_size,
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    layer.ceil_mode,
                )
            elif isinstance(layer, nn.Flatten):
                x = x.reshape(x.shape[0], k, -1).transpose(0, 1)
        return x


def _pool_before_relu(layers: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """A ReLU followed by a MaxPool2d, swapped: the same outputs (max-pooling commutes with a
    non-decreasing function) and the same gradients (where every input of a window is <= 0
    both give 0), with the ReLU and its backward on a quarter of the values (2x2 pools)."""
    out = list(layers)
    for i in range(len(out) - 1):
        if isinstance(out[i][1], nn.ReLU) and isinstance(out[i + 1][1], nn.MaxPool2d):
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]] | None:
    """(parameter-name prefix, layer) in the order `module` applies them, or None when its
    forward is not the plain composition of its children."""
    children = list(module.named_children())
    if not children:
        return [(prefix, module)]
    if not (isinstance(module, nn.Sequential) or getattr(module, "SEQUENTIAL_CHILDREN", False)):
        return None
    layers: list[tuple[str, nn.Module]] = []
    for name, child in children:
        inner = _leaves(child, f"{prefix}{name}.")
        if inner is None:
            return None
        layers.extend(inner)
    return layers


def _covered(layer: nn.Module) -> bool:
    """Whether `layer` (its exact class, with these options) has a fused form here."""
    kind = type(layer)
    if kind is nn.Conv2d:
        return layer.padding_mode == "zeros" and not isinstance(layer.padding, str)
    if kind is nn.MaxPool2d:
        return not layer.return_indices
    if kind is nn.Flatten:
        return layer.start_dim == 1 and layer.end_dim == -1
    return kind in (nn.Linear, nn.ReLU)
