"""One trial end to end: determinism, CIFAR files, divergence, schedules, weight decay, SAM."""

from __future__ import annotations

import dataclasses
import math
import pickle
import platform
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from robustbench_opt.config import EpochRecord, Recipe, TrialConfig, TrialResult
from robustbench_opt.errors import UserError
from robustbench_opt.models import build_model
from robustbench_opt.trial import build, device, engine, provenance, rules, single


def digits_config(**changes: object) -> TrialConfig:
    """A small digits trial; `changes` go to the Recipe when they name a Recipe field."""
    recipe_fields = {f.name for f in dataclasses.fields(Recipe)}
    recipe = {k: v for k, v in changes.items() if k in recipe_fields}
    config = {k: v for k, v in changes.items() if k not in recipe_fields}
    base = TrialConfig(
        dataset="digits",
        model="simple_cnn",
        optimizer="adam",
        lr=1e-3,
        weight_decay=0.0,
        recipe=Recipe(**{"epochs": 2, "batch_size": 128, **recipe}),
        device="cpu",
    )
    return dataclasses.replace(base, **config)


def metrics(result: TrialResult) -> list[tuple[float, ...]]:
    """Per-epoch numbers without wall time."""
    return [
        (r.train_loss, r.train_acc, r.test_loss, r.test_acc, r.lr, r.val_loss or 0.0)
        for r in result.epochs
    ]


def test_same_seed_same_result_other_seed_differs_and_provenance_is_recorded() -> None:
    config = digits_config(seed=3)
    first, again = engine.run_trial(config), engine.run_trial(config)
    other = engine.run_trial(dataclasses.replace(config, seed=4))
    assert metrics(first) == metrics(again)
    assert [m[0] for m in metrics(first)] != [m[0] for m in metrics(other)]
    assert first.status == "completed" and len(first.epochs) == 2
    assert first.final_test_acc == first.epochs[-1].test_acc
    assert first.best_test_acc == max(r.test_acc for r in first.epochs)
    assert first.test_acc_at_best_val is None and first.best_val_epoch is None
    model = build_model("simple_cnn", 10, (1, 8, 8))
    assert first.n_params == sum(p.numel() for p in model.parameters())
    packages = {"python", "torch", "torchvision", "pytorch-optimizer", "robustbench-opt"}
    assert set(first.versions) == packages | {"robustbench-opt-code"}
    assert first.versions["torch"] == torch.__version__
    assert first.versions["robustbench-opt-code"] == provenance.code_identity()
    assert first.weight_decay_params == "all"  # every parameter decays, BatchNorm and biases too
    assert first.device.startswith("cpu")
    assert first.host == platform.node()  # on a cluster: which node trained it
    assert first.weight_decay_mode == "l2"  # torch Adam: decay enters the gradient
    assert first.optimizer_kwargs  # resolved keywords (betas, eps, ...) are recorded
    assert TrialConfig.from_dict(first.config) == config
    assert TrialResult.from_dict(first.to_dict()) == first


def write_tiny_cifar10(root: Path, per_batch: int = 8, seed: int = 0) -> None:
    """torchvision's on-disk CIFAR-10 format: pickled dicts of uint8 rows [N, 3072]."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, size=per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)


def test_cifar10_trial_runs_end_to_end_from_a_tiny_cifar_directory(tmp_path: Path) -> None:
    write_tiny_cifar10(tmp_path)
    config = digits_config(
        dataset="cifar10", data_dir=str(tmp_path), epochs=1, batch_size=16, augment=("crop_flip",)
    )
    seen: list[EpochRecord] = []
    result = engine.run_trial(config, on_epoch=seen.append)
    assert result.status == "completed"
    assert seen == result.epochs and len(seen) == 1
    assert result.n_params == sum(
        p.numel() for p in build_model("simple_cnn", 10, (3, 32, 32)).parameters()
    )
    record = seen[0]
    assert 0.0 <= record.test_acc <= 1.0 and math.isfinite(record.test_loss)
    # 8 test images: accuracy is a multiple of 1/8
    assert record.test_acc * 8 == pytest.approx(round(record.test_acc * 8), abs=1e-9)


def test_huge_lr_diverges_and_keeps_its_measured_accuracies() -> None:
    result = engine.run_trial(digits_config(lr=100.0, epochs=3))
    assert result.status == "diverged"
    assert result.diverged_reason
    assert result.epochs, "a diverged trial keeps the epochs it measured"
    assert result.final_test_acc == result.epochs[-1].test_acc
    assert len(result.epochs) < 3


def test_mean_loss_above_factor_times_initial_loss_diverges() -> None:
    result = engine.run_trial(digits_config(divergence_factor=0.01, epochs=3))
    assert result.status == "diverged"
    assert len(result.epochs) == 1
    assert "initial loss" in (result.diverged_reason or "")


def test_non_finite_batch_loss_stops_the_epoch_and_diverges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_step = single.optimizer_step
    calls = []

    def step_then_nan(model, built, compute_loss):  # noqa: ANN001, ANN202
        calls.append(1)
        loss = real_step(model, built, compute_loss)
        return loss * math.nan if len(calls) == 3 else loss

    monkeypatch.setattr(single, "optimizer_step", step_then_nan)
    result = engine.run_trial(digits_config(epochs=3, batch_size=32))
    assert result.status == "diverged"
    assert "non-finite" in (result.diverged_reason or "")
    assert len(result.epochs) == 1 and math.isnan(result.epochs[0].train_loss)
    assert len(calls) == rules.DIVERGENCE_CHECK_EVERY  # stopped at the first check
    assert 0.0 <= result.final_test_acc <= 1.0


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        (Recipe(epochs=4, schedule="constant"), [1.0, 1.0, 1.0, 1.0]),
        (
            Recipe(epochs=4, schedule="cosine"),
            [(1 + math.cos(math.pi * t / 4)) / 2 for t in range(4)],
        ),
        (
            Recipe(epochs=4, schedule="step", step_milestones=(1, 3), step_gamma=0.1),
            [1.0, 0.1, 0.1, 0.01],
        ),
        (  # warmup scales the schedule by (t + 1) / (W + 1) for t < W = 2
            Recipe(epochs=4, schedule="cosine", warmup_epochs=2),
            [(1 + math.cos(math.pi * t / 4)) / 2 * w for t, w in enumerate([1 / 3, 2 / 3, 1, 1])],
        ),
    ],
)
def test_recorded_lr_per_epoch_follows_the_schedule_formula(
    recipe: Recipe, expected: list[float]
) -> None:
    config = dataclasses.replace(
        digits_config(), lr=2e-3, recipe=dataclasses.replace(recipe, batch_size=256)
    )
    lrs = [r.lr for r in engine.run_trial(config).epochs]
    assert lrs == pytest.approx([2e-3 * f for f in expected], rel=1e-12, abs=0)


def test_cosine_matches_eq17_and_step_milestones_scale_with_halved_epochs() -> None:
    recipe = Recipe(epochs=300, schedule="cosine")
    for t in (0, 1, 150, 299):
        assert rules.lr_factor(recipe, t, 300) == pytest.approx(
            (1 + math.cos(math.pi * t / 300)) / 2
        )
    step = Recipe(epochs=300, schedule="step", step_milestones=(150, 225), step_gamma=0.1)
    assert [rules.lr_factor(step, t, 300) for t in (149, 150, 224, 225)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01]
    )
    # SAM at equal compute trains 150 epochs: milestones move to 75 and 112 (rounded 112.5)
    assert [rules.lr_factor(step, t, 150) for t in (74, 75, 111, 112)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01]
    )


def simulate_plateau(losses: list[float], lr: float, factor: float, patience: int) -> list[float]:
    """torch ReduceLROnPlateau (mode min, rel threshold 1e-4) written out: lr per epoch."""
    lrs, best, bad = [], math.inf, 0
    for loss in losses:
        lrs.append(lr)
        if loss < best * (1 - 1e-4):
            best, bad = loss, 0
        else:
            bad += 1
        if bad > patience:
            lr, bad = lr * factor, 0
    return lrs


def test_plateau_schedule_cuts_lr_when_the_val_loss_stalls() -> None:
    config = digits_config(
        lr=1e-2,
        epochs=5,
        batch_size=32,
        schedule="plateau",
        plateau_patience=0,
        plateau_factor=0.5,
        val_fraction=0.2,
    )
    result = engine.run_trial(config)
    val_losses = [r.val_loss for r in result.epochs]
    expected = simulate_plateau(val_losses, 1e-2, 0.5, 0)
    assert [r.lr for r in result.epochs] == pytest.approx(expected, rel=1e-12)
    assert min(expected) < 1e-2, "the run must exercise at least one cut"
    train_rule = simulate_plateau([r.train_loss for r in result.epochs], 1e-2, 0.5, 0)
    assert train_rule != expected, "monitoring val loss must be distinguishable from train loss"


def test_weight_decay_switches_off_after_the_fraction_of_epochs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[tuple[str, float]] = []
    real_set = engine.set_weight_decay

    def record_set(built, value):  # noqa: ANN001, ANN202
        real_set(built, value)
        events.append(("wd", built.optimizer.param_groups[0]["weight_decay"]))

    monkeypatch.setattr(engine, "set_weight_decay", record_set)
    config = digits_config(
        optimizer="adamw", weight_decay=1e-2, epochs=4, wd_off_fraction=0.5, batch_size=256
    )
    result = engine.run_trial(config, on_epoch=lambda r: events.append(("epoch", r.epoch)))
    assert events == [("epoch", 1), ("epoch", 2), ("wd", 0.0), ("epoch", 3), ("epoch", 4)]
    assert "weight decay switched off from epoch 3" in result.notes
    # ceil(0.75 * 300) = 225 epochs with decay, as in the paper's recipe
    paper = Recipe(epochs=300, wd_off_fraction=0.75)
    assert [rules.weight_decay_on(paper, t, 300) for t in (224, 225)] == [True, False]
    assert all(rules.weight_decay_on(Recipe(), t, 10) for t in range(10))


def test_sam_at_equal_compute_trains_half_the_epochs() -> None:
    sam = engine.run_trial(
        digits_config(optimizer="sam", epochs=2, sam_equal_compute=True, batch_size=256)
    )
    assert len(sam.epochs) == 1 and sam.status == "completed"
    assert any("1 of 2" in note for note in sam.notes)
    assert rules.epochs_to_run(Recipe(epochs=5, sam_equal_compute=True), two_pass=True) == 2
    assert rules.epochs_to_run(Recipe(epochs=1, sam_equal_compute=True), two_pass=True) == 1
    assert rules.epochs_to_run(Recipe(epochs=5, sam_equal_compute=True), two_pass=False) == 5
    assert rules.epochs_to_run(Recipe(epochs=5), two_pass=True) == 5


def test_early_stopping_stops_after_patience_epochs_without_test_gain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The stop is built, not hoped for: evaluation answers a scripted accuracy sequence (no gain
    at epoch 3), so the test does not depend on one machine's float trajectory."""
    scripted = iter([0.5, 0.6, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99])
    monkeypatch.setattr(single.Single, "evaluate", lambda *args: ([1.0], [next(scripted)]))
    result = engine.run_trial(digits_config(epochs=8, early_stopping_patience=1))
    assert [r.test_acc for r in result.epochs] == [0.5, 0.6, 0.6]
    assert result.status == "completed" and result.best_epoch == 2
    assert any("early stopping after epoch 3" in note for note in result.notes)


def test_no_early_stop_while_accuracy_keeps_rising(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = iter([0.5, 0.6, 0.7, 0.8])
    monkeypatch.setattr(single.Single, "evaluate", lambda *args: ([1.0], [next(scripted)]))
    result = engine.run_trial(digits_config(epochs=4, early_stopping_patience=1))
    assert len(result.epochs) == 4 and not any("early stopping" in n for n in result.notes)


def test_should_stop_early_rule() -> None:
    assert rules.should_stop_early([0.5, 0.6, 0.6], patience=1)
    assert not rules.should_stop_early([0.5, 0.6, 0.7], patience=1)
    assert not rules.should_stop_early([0.5, 0.4, 0.6], patience=2)
    assert rules.should_stop_early([0.5, 0.4, 0.5], patience=2)
    assert not rules.should_stop_early([0.5, 0.4, 0.3], patience=None)


def test_bf16_autocast_is_ignored_on_cpu_with_a_note() -> None:
    result = engine.run_trial(digits_config(epochs=1, amp_bf16=True, channels_last=True))
    assert result.status == "completed"
    assert any("amp_bf16 ignored on cpu" in note for note in result.notes)


def test_result_notes_the_data_path_and_memory_format_that_ran() -> None:
    auto = engine.run_trial(digits_config(epochs=1))
    assert "data path: device-resident; channels_last off" in auto.notes  # CPU defaults
    forced = engine.run_trial(digits_config(epochs=1, data_on_device=False, channels_last=True))
    assert "data path: torchvision loader; channels_last on" in forced.notes


def test_data_path_is_decided_once_per_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    """Auto mode reads free device memory, which the trial itself then uses: the choice made
    before the first epoch must hold for every epoch."""
    from robustbench_opt.data import device as device_path

    answers = iter([True] + [False] * 10)  # fits at first, "no longer fits" afterwards
    monkeypatch.setattr(device_path, "fits_on_device", lambda splits, device: next(answers))
    seen: list[bool] = []
    real = engine.train_batches

    def spy(splits, recipe, device, seed, epoch, on_device):
        seen.append(on_device)
        return real(splits, recipe, device, seed, epoch, on_device)

    monkeypatch.setattr(engine, "train_batches", spy)
    result = engine.run_trial(digits_config(epochs=3))
    assert seen == [True, True, True]
    assert "data path: device-resident; channels_last off" in result.notes
    # The decision is recorded beside the recipe, which stays what was asked (auto).
    assert result.runtime["data_on_device"] is True and result.runtime["pack_size"] == 1
    assert result.config["recipe"]["data_on_device"] is None


def test_channels_last_defaults_on_for_cuda_only() -> None:
    assert device.use_channels_last(Recipe(), torch.device("cuda"))
    assert not device.use_channels_last(Recipe(), torch.device("cpu"))
    assert not device.use_channels_last(Recipe(channels_last=False), torch.device("cuda"))
    assert device.use_channels_last(Recipe(channels_last=True), torch.device("cpu"))


def test_pick_device() -> None:
    assert device.pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert device.pick_device(None) == torch.device("cpu")
        with pytest.raises(UserError, match="'cuda'"):
            device.pick_device("cuda")
    with pytest.raises(UserError, match="unknown device 'tpu'"):
        device.pick_device("tpu")
    with pytest.raises(UserError, match="unknown device 'gpu0'"):
        device.pick_device("gpu0")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"epochs": 0}, "recipe.epochs: must be an integer >= 1, got 0"),
        ({"wd_off_fraction": 1.5}, "recipe.wd_off_fraction: must be a fraction in [0, 1], got 1.5"),
        ({"schedule": "linear"}, "recipe.schedule: unknown schedule 'linear'"),
        ({"early_stopping_patience": 0}, "recipe.early_stopping_patience: must be an integer >= 1"),
    ],
)
def test_bad_recipe_values_are_one_line_user_errors(change: dict[str, object], needle: str) -> None:
    with pytest.raises(UserError) as caught:
        engine.run_trial(digits_config(**change))
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_no_norm_bias_trains_with_undecayed_biases_and_records_the_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    groups: list[list[dict]] = []
    real_build = build.build_optimizer

    def record_build(params, *args):  # noqa: ANN001, ANN202
        built = real_build(params, *args)
        groups.append(built.optimizer.param_groups)
        return built

    monkeypatch.setattr(build, "build_optimizer", record_build)
    config = digits_config(
        optimizer="adamw", weight_decay=1e-2, epochs=1, weight_decay_params="no_norm_bias"
    )
    result = engine.run_trial(config)
    assert result.weight_decay_params == "no_norm_bias"
    assert TrialResult.from_dict(result.to_dict()).weight_decay_params == "no_norm_bias"
    [(decayed, undecayed)] = groups
    assert decayed["weight_decay"] == 1e-2 and all(p.ndim >= 2 for p in decayed["params"])
    assert undecayed["weight_decay"] == 0.0 and all(p.ndim == 1 for p in undecayed["params"])
    assert len(undecayed["params"]) == 4  # simple_cnn: two conv and two linear biases


def test_code_identity_is_the_git_commit_with_a_dirty_mark_else_a_source_hash(
    tmp_path: Path,
) -> None:
    identity = provenance.code_identity.__wrapped__  # uncached
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("x = 1\n")
    (package / "mod.py").write_text("y = 2\n")
    loose = identity(package)  # not in a git checkout yet
    assert loose.startswith("sha256 ") and len(loose) == len("sha256 ") + 64
    (package / "mod.py").write_text("y = 3\n")
    assert identity(package) != loose  # the hash follows the source

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=package.parent, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return run.stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    commit = git("rev-parse", "HEAD")
    assert identity(package) == f"git {commit}"
    (package / "mod.py").write_text("y = 4\n")
    assert identity(package) == f"git {commit}+dirty"
    (package / "mod.py").write_text("y = 3\n")
    (package / "new.py").write_text("z = 5\n")  # an untracked source file counts too
    assert identity(package) == f"git {commit}+dirty"


def test_label_smoothing_is_the_training_loss_and_the_test_loss_stays_plain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first step's loss is F.cross_entropy with label_smoothing of the untrained model's
    logits on the first batch (float64, so the comparison is exact up to rounding)."""
    seen: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    real = single.F.cross_entropy

    def spy(logits, targets, **kwargs):  # noqa: ANN001, ANN202
        loss = real(logits, targets, **kwargs)
        if "label_smoothing" in kwargs and not seen:
            seen.append((logits.detach().clone(), targets.clone(), loss.item()))
        return loss

    monkeypatch.setattr(single.F, "cross_entropy", spy)
    torch.set_default_dtype(torch.float64)
    try:
        smoothed = engine.run_trial(digits_config(epochs=1, label_smoothing=0.2))
    finally:
        torch.set_default_dtype(torch.float32)
    [(logits, targets, loss)] = seen
    log_p = torch.log_softmax(logits, dim=1)
    by_hand = -(0.8 * log_p.gather(1, targets[:, None]).squeeze(1) + 0.2 * log_p.mean(1)).mean()
    assert loss == pytest.approx(by_hand.item(), rel=1e-12)
    assert abs(loss - real(logits, targets).item()) > 1e-4  # it did smooth
    plain = engine.run_trial(digits_config(epochs=1))
    assert smoothed.config["recipe"]["label_smoothing"] == 0.2
    assert plain.epochs[0].test_loss > 0 and smoothed.epochs[0].test_loss > 0


def test_warmup_with_the_plateau_schedule_is_refused_in_one_line() -> None:
    with pytest.raises(UserError, match="warmup applies to constant, step and cosine") as caught:
        engine.run_trial(digits_config(schedule="plateau", warmup_epochs=2))
    assert "\n" not in str(caught.value)
