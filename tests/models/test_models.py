"""Model registry: published parameter counts, depth, forward shapes, unknown names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_opt.errors import UserError
from robustbench_opt.models import MODELS, build_model, model_names


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def weighted_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@pytest.mark.parametrize(
    ("name", "millions", "digits", "layers"),
    [
        ("resnet20", 0.27, 2, 20),  # He et al. 2016, Table 6
        ("resnet56", 0.85, 2, 56),  # He et al. 2016, Table 6
        ("wrn28_10", 36.5, 1, 1 + 24 + 3 + 1),  # stem, 12 blocks, 3 1x1 shortcuts, fc
    ],
)
def test_cifar_networks_match_published_size_and_depth(name, millions, digits, layers):
    model = build_model(name, num_classes=10, in_channels=3, image_size=32)
    assert round(n_params(model) / 1e6, digits) == millions
    assert weighted_layers(model) == layers


def test_cifar_resnet18_has_the_published_parameter_count_and_cifar_stem():
    model = build_model("resnet18", num_classes=10, in_channels=3, image_size=32)
    assert n_params(model) == 11_173_962
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_option_a_shortcuts_add_no_parameters():
    model = build_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(c.kernel_size == (3, 3) for c in convs)


@pytest.mark.parametrize("name", model_names())
def test_every_model_maps_cifar_and_digits_batches_to_logits(name):
    torch.manual_seed(0)
    for classes, channels, size in ((10, 3, 8), (10, 1, 8)):  # small CIFAR-like; digits
        model = build_model(name, num_classes=classes, in_channels=channels, image_size=size)
        logits = model(torch.randn(2, channels, size, size))
        assert logits.shape == (2, classes)
        assert torch.isfinite(logits).all()


def test_num_classes_sets_the_classifier_width():
    model = build_model("resnet20", num_classes=100, in_channels=3, image_size=8)
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 100)


def test_unknown_model_is_a_one_line_user_error_with_a_suggestion():
    with pytest.raises(UserError) as info:
        build_model("resnet2O", num_classes=10, in_channels=3, image_size=32)
    message = str(info.value)
    assert "\n" not in message
    assert "'resnet2O'" in message and "did you mean 'resnet20'?" in message
    assert all(name in message for name in MODELS)
