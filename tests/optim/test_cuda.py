"""On CUDA, torch and pytorch-optimizer take foreach paths; they must agree with the CPU ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_opt.optim import REGISTRY, build_optimizer, optimizer_step

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

CASES = [(name, {}) for name in REGISTRY] + [
    ("sam", {"base": "adamw"}),
    ("asam", {"base": "proposed"}),
]


def _net(device: str) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    return net.double().to(device)


def _train(name: str, kwargs: dict, device: str) -> tuple[nn.Sequential, list[float]]:
    model = _net(device)
    built = build_optimizer(model.parameters(), name, 0.01, 0.01, kwargs)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=gen, dtype=torch.float64).to(device)
    y = (torch.arange(16) % 3).to(device)
    losses = []
    for _ in range(6):
        loss = optimizer_step(model, built, lambda: nn.functional.cross_entropy(model(x), y))
        losses.append(float(loss))
    return model, losses


@pytest.mark.parametrize(("name", "kwargs"), CASES)
def test_cuda_steps_match_cpu_steps(name: str, kwargs: dict) -> None:
    cpu, cpu_losses = _train(name, kwargs, "cpu")
    gpu, gpu_losses = _train(name, kwargs, "cuda")
    assert gpu_losses == pytest.approx(cpu_losses, rel=1e-9)
    for (key, a), b in zip(cpu.state_dict().items(), gpu.state_dict().values(), strict=True):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-9, atol=1e-12, msg=key)
    assert int(gpu[1].num_batches_tracked) == 6
