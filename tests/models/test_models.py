"""Model registry: published parameter counts, depth, forward shapes, which inputs fit,
unknown names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_opt.datasets import REGISTRY
from robustbench_opt.errors import UserError
from robustbench_opt.models import MODELS, build_model, check_fits, fitting_models, model_names


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
    model = build_model(name, num_classes=10, shape=(3, 32, 32))
    assert round(n_params(model) / 1e6, digits) == millions
    assert weighted_layers(model) == layers


def test_cifar_resnet18_has_the_published_parameter_count_and_cifar_stem():
    model = build_model("resnet18", num_classes=10, shape=(3, 32, 32))
    assert n_params(model) == 11_173_962
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


def test_option_a_shortcuts_add_no_parameters():
    model = build_model("resnet20", num_classes=10, shape=(3, 32, 32))
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and all(c.kernel_size == (3, 3) for c in convs)


IMAGES = [name for name in model_names() if MODELS[name].inputs == "image"]


@pytest.mark.parametrize("name", IMAGES)
def test_every_image_model_maps_cifar_digits_and_mnist_batches_to_logits(name):
    torch.manual_seed(0)
    for classes, shape in ((10, (3, 8, 8)), (10, (1, 8, 8)), (7, (1, 28, 28))):
        model = build_model(name, num_classes=classes, shape=shape)
        logits = model(torch.randn(2, *shape))
        assert logits.shape == (2, classes)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        # conv 1*32*9+32, conv 32*64*9+64, fc 64*s*s*128+128, fc 128*10+10
        ("simple_cnn", (1, 8, 8), 320 + 18_496 + 256 * 128 + 128 + 1290),
        ("simple_cnn", (1, 28, 28), 320 + 18_496 + 3136 * 128 + 128 + 1290),
        ("simple_cnn", (3, 32, 32), 896 + 18_496 + 4096 * 128 + 128 + 1290),
        # the reference's MLPBase: d*100+100, 100*100+100, 100*10+10
        ("mlp", (1, 40), 4100 + 10_100 + 1010),
        ("mlp", (1, 28, 28), 78_500 + 10_100 + 1010),
        # the reference's ConvBase: 1*25*5+25, 25*25*3+25 twice, 125*10+10
        ("cnn1d", (1, 40), 150 + 1900 + 1900 + 1260),
    ],
)
def test_parameter_counts_follow_the_input_shape(name, shape, params):
    model = build_model(name, num_classes=10, shape=shape)
    assert n_params(model) == params
    assert model(torch.randn(3, *shape)).shape == (3, 10)


def test_cnn1d_downsamples_forty_samples_to_five_as_the_reference():
    model = build_model("cnn1d", num_classes=10, shape=(1, 40))
    assert model.features(torch.randn(2, 1, 40)).shape == (2, 25, 5)
    assert build_model("cnn1d", 4, (2, 100))(torch.randn(5, 2, 100)).shape == (5, 4)


def test_each_registered_data_set_has_models_that_fit_and_they_run_on_it():
    for info in REGISTRY.values():
        fit = fitting_models(info.shape)
        assert "mlp" in fit
        assert ("cnn1d" in fit) == (not info.is_image) == ("simple_cnn" not in fit)
        for name in fit:
            model = build_model(name, info.num_classes, info.shape)
            assert model(torch.randn(2, *info.shape)).shape == (2, info.num_classes)


def test_a_model_that_does_not_fit_the_data_is_a_one_line_error_naming_the_models_that_do():
    with pytest.raises(UserError) as info:
        check_fits("resnet20", (1, 40), "mnist1d")
    assert str(info.value) == (
        "model 'resnet20' does not fit mnist1d's examples of shape (1, 40) (it takes images "
        "(C, H, W)); models that fit: cnn1d, mlp"
    )
    with pytest.raises(UserError, match=r"'cnn1d' does not fit cifar10's .* \(3, 32, 32\)"):
        check_fits("cnn1d", (3, 32, 32), "cifar10")
    with pytest.raises(UserError, match=r"needs sides of at least 8\); models that fit: mlp, "):
        build_model("airbench", 10, (3, 4, 4))


def test_num_classes_sets_the_classifier_width():
    model = build_model("resnet20", num_classes=100, shape=(3, 8, 8))
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 100)


def test_unknown_model_is_a_one_line_user_error_with_a_suggestion():
    with pytest.raises(UserError) as info:
        build_model("resnet2O", num_classes=10, shape=(3, 32, 32))
    message = str(info.value)
    assert "\n" not in message
    assert "'resnet2O'" in message and "did you mean 'resnet20'?" in message
    assert all(name in message for name in MODELS)
