"""Packed training equals training each cell alone: step by step in float64 for every registry
optimizer, whole digits trials in float32, a diverging cell, the fallback, the pack check."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_opt.config import EpochRecord, Recipe, TrialConfig, TrialResult
from robustbench_opt.errors import UserError
from robustbench_opt.models import MODELS, ModelInfo, build_model
from robustbench_opt.optim import build_optimizer, optimizer_step
from robustbench_opt.trial.engine import run_trial, train_cells
from robustbench_opt.trial.pack import Pack

# (optimizer, fixed keywords, base lr): every registry entry that trains without a closure,
# the SAM family over momentum and over adam, and one pytorch-optimizer zoo entry (lion).
OPTIMIZERS = [
    ("sgd", {}, 0.05),
    ("momentum", {}, 0.02),
    ("nag", {}, 0.02),
    ("adam", {}, 1e-3),
    ("adamw", {}, 1e-3),
    ("radam", {}, 1e-3),
    ("adabelief", {}, 1e-3),
    ("adabound", {}, 1e-3),
    ("proposed", {}, 1e-3),
    ("sam", {}, 0.02),
    ("asam", {"base": "adam"}, 1e-3),
    ("lion", {}, 1e-4),
]
CELLS = [(1.0, 0.0, 0), (2.0, 1e-4, 1), (0.5, 5e-3, 2)]  # (lr multiplier, weight decay, seed)
STEPS = 20
BATCH = 8


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine two threads spin against each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bn_cnn() -> nn.Module:
    """A small CNN with BatchNorm (running statistics) for the step-level harness. Convolutions
    before BatchNorm have no bias: its gradient is 0 up to rounding, which sign-like updates
    (Adam's first steps, Lion) would turn into +-lr at random."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )


def cell_batches(seed: int, steps: int) -> list[tuple[Tensor, Tensor]]:
    generator = torch.Generator().manual_seed(1000 + seed)
    return [
        (
            torch.randn(BATCH, 1, 8, 8, generator=generator, dtype=torch.float64),
            torch.randint(0, 10, (BATCH,), generator=generator),
        )
        for _ in range(steps)
    ]


def cell_model(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return make().double()


def alone(
    make: Callable[[], nn.Module],
    name: str,
    kwargs: dict,
    lr: float,
    wd: float,
    seed: int,
    steps: int,
) -> dict[str, Tensor]:
    """One cell trained on its own with the product's `optimizer_step`."""
    model = cell_model(make, seed)
    built = build_optimizer(model.parameters(), name, lr, wd, kwargs)
    model.train()
    for x, y in cell_batches(seed, steps):
        optimizer_step(model, built, lambda x=x, y=y: F.cross_entropy(model(x), y))
    return model.state_dict()


def together(
    make: Callable[[], nn.Module], name: str, kwargs: dict, base_lr: float, steps: int
) -> list[dict[str, Tensor]]:
    """The same cells trained as one pack."""
    models = [cell_model(make, seed) for _, _, seed in CELLS]
    pack = Pack(models)
    optimizers = [
        build_optimizer(m.parameters(), name, base_lr * mult, wd, kwargs)
        for m, (mult, wd, _) in zip(models, CELLS, strict=True)
    ]
    streams = [cell_batches(seed, steps) for _, _, seed in CELLS]
    for step in range(steps):
        inputs = torch.stack([stream[step][0] for stream in streams])
        targets = torch.stack([stream[step][1] for stream in streams])
        pack.step(optimizers, inputs, targets)
    return [m.state_dict() for m in models]


def assert_same_states(packed_states: list[dict], alone_states: list[dict]) -> None:
    for got, want in zip(packed_states, alone_states, strict=True):
        assert got.keys() == want.keys()
        assert any("running_var" in key for key in got)  # BatchNorm statistics are compared
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.parametrize(("name", "kwargs", "base_lr"), OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_each_packed_cell_equals_its_own_training_after_20_float64_steps(
    name: str, kwargs: dict, base_lr: float
) -> None:
    want = [
        alone(bn_cnn, name, kwargs, base_lr * mult, wd, seed, STEPS) for mult, wd, seed in CELLS
    ]
    before = cell_model(bn_cnn, 0).state_dict()
    got = together(bn_cnn, name, kwargs, base_lr, STEPS)
    assert not torch.equal(got[0]["0.weight"], before["0.weight"])  # it trained
    assert_same_states(got, want)


@pytest.mark.parametrize("name", ["momentum", "asam"])
def test_resnet20_packed_cells_equal_their_own_training_in_float64(name: str) -> None:
    def make() -> nn.Module:
        return build_model("resnet20", 10, 1, 8)

    steps = 6
    want = [alone(make, name, {}, 0.02 * mult, wd, seed, steps) for mult, wd, seed in CELLS]
    assert_same_states(together(make, name, {}, 0.02, steps), want)


# --------------------------------------------------------------------------- whole trials

# Whole trials run in float64 (the `float64` fixture): the fused (grouped) convolutions round in
# another order than one model's, and in float32 a 1-ulp difference now and then breaks a
# max-pool tie (digits images have flat zero regions) the other way, which moves the trajectory
# by CPU-dependent amounts (measured: 0.014 in accuracy with oneDNN off on this machine, 0.021 on
# a fresh Intel machine). In float64 packed and alone agree to ~2e-16 (with and without oneDNN,
# with ATen's default and AVX2 kernels), so the stated tolerances hold with a margin of ~1e12
# on any machine. The exact mechanics are pinned by the float64 step-level tests above.
LOSS_RTOL = 2e-3  # relative, every loss of every epoch
ACC_ATOL = 0.01  # absolute, every accuracy of every epoch (3.6 test images of 360)
WHOLE_TRIALS = pytest.mark.usefixtures("float64")


def digits(**changes: object) -> TrialConfig:
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    recipe = {k: v for k, v in changes.items() if k in recipe_fields}
    rest = {k: v for k, v in changes.items() if k not in recipe_fields}
    base = TrialConfig(
        dataset="digits",
        model="simple_cnn",
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        recipe=Recipe(**{"epochs": 3, "batch_size": 64, "schedule": "cosine", **recipe}),
        device="cpu",
    )
    return dataclasses.replace(base, **rest)


def grid(**changes: object) -> list[TrialConfig]:
    cells = [(1e-3, 0.0, 0), (2e-3, 1e-4, 1), (5e-4, 5e-4, 2)]
    return [digits(lr=lr, weight_decay=wd, seed=seed, **changes) for lr, wd, seed in cells]


def assert_same_trial(got: TrialResult, want: TrialResult) -> None:
    assert got.status == want.status
    assert got.diverged_reason == want.diverged_reason
    assert len(got.epochs) == len(want.epochs)
    for a, b in zip(got.epochs, want.epochs, strict=True):
        assert a.epoch == b.epoch and a.lr == b.lr
        for key in ("train_loss", "test_loss", "val_loss"):
            x, y = getattr(a, key), getattr(b, key)
            assert (x is None) == (y is None)
            if x is not None:
                assert x == pytest.approx(y, rel=LOSS_RTOL, nan_ok=True), key
        for key in ("train_acc", "test_acc", "val_acc"):
            x, y = getattr(a, key), getattr(b, key)
            assert (x is None) == (y is None)
            if x is not None:
                assert abs(x - y) <= ACC_ATOL, key
    assert got.n_params == want.n_params
    assert got.optimizer_kwargs == want.optimizer_kwargs
    assert got.config == want.config


@WHOLE_TRIALS
def test_a_packed_digits_trial_has_its_unpacked_trials_per_epoch_metrics() -> None:
    configs = grid(val_fraction=0.1, augment=("crop",), cutmix_prob=0.5, wd_off_fraction=0.5)
    seen: list[tuple[int, EpochRecord]] = []
    results = train_cells(configs, on_epoch=lambda k, r: seen.append((k, r)))
    for config, result in zip(configs, results, strict=True):
        assert_same_trial(result, run_trial(config))
        assert any("packed" in note and "3 cells" in note for note in result.notes)
        assert "weight decay switched off from epoch 3" in result.notes
    assert [k for k, _ in seen] == [0, 1, 2] * 3
    assert [r.epoch for _, r in seen] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


@WHOLE_TRIALS
def test_label_smoothing_and_warmup_train_packed_as_alone() -> None:
    configs = grid(epochs=2, label_smoothing=0.1, warmup_epochs=1, cutmix_prob=0.5)
    for config, result in zip(configs, train_cells(configs), strict=True):
        assert_same_trial(result, run_trial(config))


@WHOLE_TRIALS
def test_the_torchvision_loader_path_packs_too() -> None:
    configs = grid(epochs=2, data_on_device=False)
    results = train_cells(configs)
    for config, result in zip(configs, results, strict=True):
        assert_same_trial(result, run_trial(config))
        assert any("torchvision loader" in note for note in result.notes)


@WHOLE_TRIALS
def test_a_diverging_cell_leaves_the_pack_mid_epoch_and_the_others_are_unchanged() -> None:
    # Adam's first step moves every weight by ~lr whatever the gradient: at lr 1e300 the second
    # layer's outputs (~1e300 x 1e300) overflow float64 from the second batch on, so the first
    # non-finite check (batch 20) fails.
    configs = grid(epochs=3)
    configs[1] = dataclasses.replace(configs[1], lr=1e300)
    events: list[tuple[str, int]] = []
    restack = Pack.restack

    def spy(self: Pack, models: list[nn.Module]) -> None:
        restack(self, models)
        events.append(("stacked", len(self.models)))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pack, "restack", spy)
        results = train_cells(
            configs,
            on_epoch=lambda k, r: events.append(("epoch", k)),
            on_result=lambda k, r: events.append(("final", k)),
        )
    assert results[1].status == "diverged" and len(results[1].epochs) == 1
    assert "non-finite" in (results[1].diverged_reason or "")
    # It left the stack during epoch 1, came back for its evaluation, was final at once and left.
    first_epoch = events.index(("epoch", 0))
    assert ("stacked", 2) in events[:first_epoch]
    assert events[first_epoch : first_epoch + 5] == [
        ("epoch", 0),
        ("epoch", 1),
        ("final", 1),  # final as soon as its epoch is recorded
        ("epoch", 2),
        ("stacked", 2),  # then it leaves the stack for good
    ]
    assert [k for kind, k in events if kind == "epoch"].count(1) == 1
    for config, result in zip(configs, results, strict=True):
        assert_same_trial(result, run_trial(config))


@WHOLE_TRIALS
def test_a_cell_that_stops_early_is_recorded_then_and_the_others_go_on() -> None:
    configs = grid(epochs=4, early_stopping_patience=1)
    results = train_cells(configs)
    for config, result in zip(configs, results, strict=True):
        assert_same_trial(result, run_trial(config))


# --------------------------------------------------------------------------- fallback and checks


class ItemNet(nn.Module):
    """A model whose forward reads a tensor value (`.item()`), which vmap cannot batch."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int):
        super().__init__()
        self.linear = nn.Linear(in_channels * image_size**2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        scale = 1.0 if x.abs().max().item() < 1e9 else 0.5
        return self.linear(x.flatten(1)) * scale


@WHOLE_TRIALS
def test_a_model_vmap_cannot_run_falls_back_to_ordinary_trials_with_a_note(monkeypatch) -> None:
    monkeypatch.setitem(MODELS, "item_net", ModelInfo(ItemNet, "test only", "test"))
    configs = grid(epochs=1, model="item_net")[:2]
    epochs: list[int] = []
    results = train_cells(configs, on_epoch=lambda k, r: epochs.append(k))
    assert epochs == [0, 1]
    for config, result in zip(configs, results, strict=True):
        assert result.status == "completed"
        assert any(n.startswith("packing fell back to an ordinary trial: ") for n in result.notes)
        assert not any(n.startswith("packed:") for n in result.notes)
        assert result.epochs[0].train_loss == run_trial(config).epochs[0].train_loss


def test_an_optimizer_that_needs_a_closure_is_refused_in_one_line_packed_or_not() -> None:
    """The registry refuses closure-only optimizers (L-BFGS) when they are built, so a pack
    of them fails as their own trials do: one line, before any training."""
    configs = [digits(optimizer="torch.optim:LBFGS", lr=lr) for lr in (0.1, 0.01)]
    with pytest.raises(UserError, match="needs a closure") as error:
        train_cells(configs)
    assert "\n" not in str(error.value)


def test_cells_that_differ_in_more_than_lr_wd_and_seed_are_refused() -> None:
    configs = grid()
    configs[2] = dataclasses.replace(configs[2], recipe=Recipe(epochs=5))
    with pytest.raises(UserError, match="must share recipe") as error:
        train_cells(configs)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="must share optimizer"):
        train_cells([digits(), digits(optimizer="sgd")])


# --------------------------------------------------------------------------- the fused layers


def digits_cnn() -> nn.Module:
    return build_model("simple_cnn", 10, 1, 8)


def plain_net() -> nn.Module:
    """Layers and options the fused path covers besides simple_cnn's: strided and biasless
    convolutions, grouped ones, a strided max-pool, a biasless Linear, a ReLU on features."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False),
        nn.ReLU(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2),
        nn.MaxPool2d(3, stride=1, padding=1),
        nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 12, bias=False), nn.ReLU()),
        nn.Linear(12, 10),
    )


FUSED_OPTIMIZERS = [
    o for o in OPTIMIZERS if o[0] in ("sgd", "momentum", "adam", "adamw", "sam", "lion")
]


@pytest.mark.parametrize("make", [digits_cnn, plain_net], ids=["simple_cnn", "plain_net"])
@pytest.mark.parametrize(
    ("name", "kwargs", "base_lr"), FUSED_OPTIMIZERS, ids=[o[0] for o in FUSED_OPTIMIZERS]
)
def test_fused_layers_train_each_cell_as_alone_after_20_float64_steps(
    make: Callable[[], nn.Module], name: str, kwargs: dict, base_lr: float
) -> None:
    assert Pack([make(), make()]).path == "fused layers"
    want = [alone(make, name, kwargs, base_lr * mult, wd, seed, STEPS) for mult, wd, seed in CELLS]
    got = together(make, name, kwargs, base_lr, STEPS)
    first = next(iter(want[0]))
    assert not torch.equal(got[0][first], cell_model(make, 0).state_dict()[first])  # it trained
    for got_state, want_state in zip(got, want, strict=True):
        assert got_state.keys() == want_state.keys()
        for key in want_state:
            torch.testing.assert_close(got_state[key], want_state[key], rtol=1e-10, atol=1e-13)


def test_the_fused_pack_evaluates_each_cell_as_its_own_model() -> None:
    models = [cell_model(digits_cnn, seed) for seed in range(3)]
    pack = Pack(models)
    x, y = cell_batches(0, 1)[0]
    losses, accs = pack.evaluate([(x, y)])
    for model, loss, acc in zip(models, losses, accs, strict=True):
        logits = model(x)
        assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-13)
        assert acc == (logits.argmax(1) == y).double().mean().item()


class TwoPaths(nn.Module):
    """Sequential-looking children whose forward is not their composition."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 10)
        self.b = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.a(x.flatten(1)) + self.b(x.flatten(1))


@pytest.mark.parametrize(
    "make",
    [bn_cnn, lambda: build_model("resnet20", 10, 1, 8), TwoPaths, lambda: nn.Linear(64, 10)],
    ids=["batchnorm", "resnet20", "custom_forward", "no_flatten"],
)
def test_models_the_fused_layers_do_not_cover_keep_vmap(make: Callable[[], nn.Module]) -> None:
    assert Pack([make(), make()]).path == "torch.func vmap"
