"""Name resolution, keyword checking and the one-line errors of the optimizer registry."""

from __future__ import annotations

import math

import pytest
import pytorch_optimizer
import torch
from torch import nn

from robustbench_opt.errors import UserError
from robustbench_opt.optim import REGISTRY, build_optimizer, get_info, list_optimizers

NAMES = ("sgd", "momentum", "nag", "adam", "adamw", "radam", "adabelief", "adabound")


def _params() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(3))]


def _error(name: str, lr: float = 0.1, wd: float = 0.0, kwargs: dict | None = None) -> str:
    with pytest.raises(UserError) as info:
        build_optimizer(_params(), name, lr, wd, kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_registry_holds_the_papers_optimizers_and_the_sam_family() -> None:
    expected = {*NAMES, "adamw_radam_adabelief", "sam", "asam"}
    assert set(REGISTRY) == expected
    assert get_info("proposed") is get_info("adamw_radam_adabelief")
    assert {n for n in expected if get_info(n).two_pass} == {"sam", "asam"}


def test_our_names_win_over_the_zoo_and_the_zoo_is_listed() -> None:
    assert get_info("adam").factory is torch.optim.Adam  # pytorch-optimizer also has 'adam'
    names = [info.name for info in list_optimizers()]
    assert len(names) == len(set(names))
    assert names[: len(REGISTRY)] == list(REGISTRY)
    assert {"adan", "lion", "lamb"} <= set(names)
    assert "lomo" not in names  # takes a model, not parameters: cannot run on a grid
    adan = build_optimizer(_params(), "adan", 1e-3, 0.01, {"max_grad_norm": 1.0})
    assert isinstance(adan.optimizer, pytorch_optimizer.Adan)
    assert adan.info.weight_decay_mode == "upstream"
    assert adan.kwargs["max_grad_norm"] == 1.0


def test_built_optimizer_records_defaults_user_values_and_pinned_flags() -> None:
    built = build_optimizer(_params(), "proposed", 0.1, 0.01, {"betas": [0.8, 0.99]})
    assert isinstance(built.optimizer, pytorch_optimizer.AdaBelief)
    assert built.kwargs["betas"] == (0.8, 0.99)  # YAML lists become the library's tuples
    assert built.kwargs["rectify"] is True and built.kwargs["n_sma_threshold"] == 4
    assert built.optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    sam = build_optimizer(_params(), "asam", 0.1, 0.0, {"base": "proposed", "eps": 1e-8})
    assert sam.kwargs["base"] == "adamw_radam_adabelief"
    assert sam.kwargs["rho"] == 0.5 and sam.kwargs["adaptive"] is True
    assert isinstance(sam.optimizer.base_optimizer, pytorch_optimizer.AdaBelief)
    assert sam.optimizer.base_optimizer.param_groups[0]["eps"] == 1e-8


def test_user_class_by_import_path_is_built_and_its_keywords_checked() -> None:
    built = build_optimizer(_params(), "torch.optim:Adagrad", 0.1, 0.01, {"lr_decay": 0.5})
    assert isinstance(built.optimizer, torch.optim.Adagrad)
    assert built.optimizer.param_groups[0]["lr_decay"] == 0.5
    message = _error("torch.optim:Adagrad", kwargs={"lr_dcay": 0.5})
    assert "'lr_dcay'" in message and "did you mean 'lr_decay'?" in message


def test_unknown_name_names_it_lists_valid_names_and_the_closest() -> None:
    message = _error("adma")
    assert message.startswith("unknown optimizer 'adma'; did you mean 'adam'?")
    assert all(name in message for name in (*NAMES, "proposed", "sam", "asam"))
    assert "package.module:Class" in message


def test_unknown_keyword_names_it_and_lists_the_valid_ones() -> None:
    message = _error("adam", kwargs={"beta": (0.9, 0.99)})
    assert message.startswith("unknown keyword 'beta' for optimizer 'adam'; did you mean 'betas'")
    assert message.endswith("valid: betas, eps")
    message = _error("sam", kwargs={"base": "adam", "momentum": 0.9})
    assert "unknown keyword 'momentum'" in message and "valid: base, betas, eps, rho" in message
    pinned = _error("sgd", kwargs={"momentum": 0.9})
    assert pinned.startswith("keyword 'momentum' of optimizer 'sgd' is pinned to 0.0")
    assert "'torch.optim.sgd:SGD'" in pinned
    over_sam = _error("sam", kwargs={"base": "nag", "nesterov": False})
    assert over_sam.startswith("keyword 'nesterov' of optimizer 'nag' is pinned to True")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"lr": 0.1}, "'lr' is not an optimizer keyword"),
        ({"weight_decay": 0.1}, "'weight_decay' is not an optimizer keyword"),
        ({"rectify": False}, "'rectify' of optimizer 'adamw_radam_adabelief' is pinned to True"),
        ({"n_sma_threshold": 5}, "use 'pytorch_optimizer.optimizer.adabelief:AdaBelief'"),
        ({"betas": (1.5, 0.9)}, "rejected its settings"),
    ],
)
def test_grid_pinned_and_out_of_range_keywords_are_user_errors(kwargs: dict, needle: str) -> None:
    assert needle in _error("proposed", kwargs=kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "needle"),
    [
        (
            "adam",
            {"betas": "oops"},
            "optimizer 'adam' keyword 'betas' expects a list of items (a number), got 'oops' "
            "(str); give a value like its default [0.9, 0.999]",
        ),
        ("adam", {"betas": [0.9, "x"]}, "keyword 'betas' expects a list of items (a number)"),
        ("adam", {"betas": [0.9]}, "rejected its settings: IndexError"),  # length: torch checks
        ("adam", {"eps": True}, "keyword 'eps' expects a number, got True (bool)"),
        ("sam", {"rho": "0.05"}, "optimizer 'sam' keyword 'rho' expects a number, got '0.05'"),
        ("sam", {"base": "adam", "betas": 0.9}, "optimizer 'adam' keyword 'betas' expects a list"),
        ("torch.optim:Adam", {"amsgrad": 1}, "keyword 'amsgrad' expects true or false, got 1"),
    ],
)
def test_keyword_values_must_have_their_defaults_type(name: str, kwargs: dict, needle: str) -> None:
    assert needle in _error(name, kwargs=kwargs)


def test_keyword_values_of_the_defaults_type_build() -> None:
    built = build_optimizer([nn.Parameter(torch.zeros(2))], "adam", 1e-3, 0.0, {"betas": [0, 0.99]})
    assert (
        built.kwargs["betas"] == (0.0, 0.99) and type(built.kwargs["betas"][0]) is float
    )  # ints are numbers; a list becomes the tuple


def test_optimizers_that_need_a_closure_are_not_listed_and_refused() -> None:
    assert "lbfgs" in pytorch_optimizer.get_supported_optimizers()
    names = {info.name for info in list_optimizers()}
    assert "lbfgs" not in names and "adan" in names
    for name in ("lbfgs", "torch.optim:LBFGS"):
        message = _error(name)
        assert "needs a closure" in message and "choose another optimizer" in message


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("no_such_pkg.mod:Opt", "cannot import module 'no_such_pkg.mod'"),
        ("torch.optim:NoSuchOpt", "has no attribute 'NoSuchOpt'"),
        ("torch.nn:Linear", "is not a torch.optim.Optimizer subclass"),
        (":Adam", "bad optimizer import path"),
        ("torch.optim:", "bad optimizer import path"),
    ],
)
def test_bad_import_path_is_a_one_line_user_error(path: str, needle: str) -> None:
    message = _error(path)
    assert needle in message and "'package.module:Class'" in message


@pytest.mark.parametrize("lr", [-0.1, math.nan, math.inf, "0.1"])
def test_negative_or_non_finite_lr_is_a_user_error(lr: float) -> None:
    assert _error("adam", lr=lr).startswith("lr must be a finite number >= 0")


@pytest.mark.parametrize("wd", [-1e-4, math.nan])
def test_negative_or_non_finite_weight_decay_is_a_user_error(wd: float) -> None:
    assert _error("adamw", wd=wd).startswith("weight_decay must be a finite number >= 0")


def test_sam_needs_a_one_pass_base_and_a_known_one() -> None:
    assert "cannot wrap the two-pass optimizer 'sam'" in _error("asam", kwargs={"base": "sam"})
    assert "unknown optimizer 'adamm'" in _error("sam", kwargs={"base": "adamm"})
    assert "keyword 'rho' clashes" in _error("sam", kwargs={"base": "adadelta"})


def test_optimizer_without_weight_decay_needs_zero() -> None:
    assert "has no weight_decay" in _error("a2grad", wd=0.1)
    build_optimizer(_params(), "a2grad", 0.1, 0.0)
