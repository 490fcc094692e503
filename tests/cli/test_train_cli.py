"""`robustbench-opt train` and `optimizers`: output, exit codes, one-line errors."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from robustbench_opt.cli import main
from robustbench_opt.cli.train import add_trial_arguments, trial_config_from_args
from robustbench_opt.config import RECIPE_RULES, Recipe

REPO = Path(__file__).resolve().parents[2]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Runs the CLI in-process; argparse's SystemExit becomes an exit code."""
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--optimizer", "adamm"], ["'adamm'", "adam"]),
        (["--model", "resnet200"], ["'resnet200'", "resnet20"]),
        (["--dataset", "mnist"], ["'mnist'", "cifar10", "mnist1d", "mnist5k"]),
        (["--dataset", "mnist1d"], ["'simple_cnn' does not fit mnist1d", "fit: cnn1d, mlp"]),
        (
            ["--dataset", "mnist1d", "--model", "cnn1d", "--augment", "crop_flip"],
            ["augment ['crop_flip'] needs images (C, H, W)", "set augment: []"],
        ),
        (["--lr", "-0.1"], ["--lr", "'-0.1'", "> 0"]),
        (["--lr", "fast"], ["--lr", "'fast'"]),
        (["--epochs", "2.5"], ["--epochs", "'2.5'"]),
        (["--schedule", "linear"], ["'linear'", "cosine"]),
        (["--augment", "crop_flip,mixup"], ["'mixup'", "trivialaugment"]),
        (["--opt", "rhoo=0.05"], ["'rhoo'"]),
        (["--opt", "rho"], ["KEY=VALUE", "'rho'"]),
        (["--opt", "eps=1e-8", "--opt", "eps=1e-6"], ["'eps'", "twice"]),
        (["--device", "tpu"], ["'tpu'", "cpu", "(command line: --device)"]),
        (["--opt", "betas=oops"], ["'betas'", "'oops'", "a list of items (a number)", "default"]),
        (["--opt", "eps=small"], ["'eps'", "'small'", "expects a number"]),
        (
            ["--weight-decay-params", "norms"],
            ["--weight-decay-params", "'norms'", "no_norm_bias"],
        ),
        (["--epochs", "0"], ["--epochs", "must be an integer >= 1, got 0"]),
        (["--cutmix-prob", "2"], ["--cutmix-prob", "must be a probability in [0, 1], got 2.0"]),
        (["--step-milestones", "0,5"], ["--step-milestones", "must be an epoch >= 1, got 0"]),
        (["--step-milestones", "5,x"], ["--step-milestones", "comma list of integers", "'5,x'"]),
        (["--plateau-factor", "1"], ["--plateau-factor", "must be a number in (0, 1), got 1.0"]),
        (["--crop-padding", "-1"], ["--crop-padding", "must be an integer >= 0, got -1"]),
        (["--brightness", "inf"], ["--brightness", "finite", "'inf'"]),
        (["--data-on-device", "yes"], ["--data-on-device", "'yes'", "auto, off, on"]),
        (["--milestones", "150"], ["unrecognized arguments: --milestones"]),
        (["--cutmix", "1"], ["unrecognized arguments: --cutmix"]),
    ],
)
def test_bad_train_input_is_one_error_line(
    args: list[str], needles: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["train", "--epochs", "1", *args], capsys)
    assert_one_line_error(code, err, *needles)
    assert code == 2 and out == ""


def test_missing_cifar_directory_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"), "--epochs", "1"]
    code, _, err = run_main(args, capsys)
    assert_one_line_error(code, err, str(tmp_path / "none"), "--download")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "robustbench_opt", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )


def test_subprocess_non_numeric_lr_and_missing_cifar_exit_2_with_one_line(tmp_path: Path) -> None:
    bad_lr = run_cli("train", "--lr", "abc")
    assert bad_lr.returncode == 2 and bad_lr.stdout == ""
    assert_one_line_error(bad_lr.returncode, bad_lr.stderr, "--lr", "'abc'")
    missing = run_cli("train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1")
    assert missing.returncode == 2 and missing.stdout == ""
    assert_one_line_error(missing.returncode, missing.stderr, str(tmp_path), "--download")


def test_json_prints_only_the_trial_result(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--epochs", "2", "--batch-size", "256", "--device", "cpu", "--json"]
    args += ["--optimizer", "adamw", "--weight-decay", "1e-2", "--opt", "betas=[0.9,0.99]"]
    code, out, err = run_main(args, capsys)
    assert code == 0
    result = json.loads(out)  # stdout is exactly one JSON document
    assert result["status"] == "completed" and len(result["epochs"]) == 2
    assert result["optimizer_kwargs"]["betas"] == [0.9, 0.99]
    assert result["config"]["optimizer_kwargs"] == {"betas": [0.9, 0.99]}
    assert result["config"]["recipe"]["batch_size"] == 256
    assert "epoch   2/2" in err  # the readable per-epoch lines go to stderr


def test_diverged_trial_exits_0_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--optimizer", "adam", "--lr", "100", "--epochs", "3", "--device", "cpu"]
    code, out, _ = run_main(args, capsys)
    assert code == 0
    assert "epoch   1/3" in out
    summary = [line for line in out.splitlines() if line.startswith("diverged: final test acc")]
    assert len(summary) == 1


def test_optimizers_table_lists_names_modes_and_two_pass(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_main(["optimizers"], capsys)
    assert code == 0
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 5 and cells[0]:
            rows[cells[0]] = cells
    assert rows["adamw_radam_adabelief"][1:4] == ["proposed", "decoupled", "no"]
    assert rows["adam"][2:4] == ["l2", "no"]
    assert rows["sam"][3] == "yes" and rows["asam"][3] == "yes"
    assert "lbfgs" not in rows and "adan" in rows  # needs a closure: cannot run a trial
    assert max(len(line) for line in out.splitlines()) <= 100
    assert "(Kingma & Ba, arXiv 1412.6980" in out.replace("\n", " ")  # folded, never cut


def test_train_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_main(["train", "--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    assert "--batch-size BATCH_SIZE images per optimizer step (default: 128)" in text
    assert "--epochs EPOCHS passes over the training split (default: 10)" in text
    assert "--weight-decay-params {all,no_norm_bias}" in text and "(default: all)" in text
    assert "--plateau-factor PLATEAU_FACTOR" in text and "(default: 0.5)" in text
    assert "--wd-off-fraction WD_OFF_FRACTION" in text and "(default: never)" in text
    assert "--data-on-device {auto,on,off}" in text and "(default: auto)" in text
    assert "(default: off)" in text and "(comma list; default: none)" in text
    helps = {}  # flag -> its help paragraph
    for block in re.split(r"\n  (?=--)", out.split("options:", 1)[1]):
        helps[block.split()[0]] = " ".join(block.split())
    for field in dataclasses.fields(Recipe):
        default = field.default
        if default is None:
            shown = RECIPE_RULES[field.name].none  # what None means: never, auto
        elif default is False or default == ():
            shown = "off" if default is False else "none"
        else:
            shown = str(default)
        flag = "--" + field.name.replace("_", "-")
        assert f"default: {shown})" in helps[flag], (flag, helps[flag])


NOT_DEFAULT = Recipe(
    epochs=3,
    batch_size=64,
    schedule="step",
    step_milestones=(1, 2),
    step_gamma=0.5,
    plateau_factor=0.25,
    plateau_patience=2,
    augment=("crop_flip", "brightness"),
    crop_padding=2,
    brightness=0.25,
    cutmix_prob=0.5,
    cutmix_alpha=0.5,
    wd_off_fraction=0.75,
    early_stopping_patience=4,
    divergence_factor=5.0,
    sam_equal_compute=True,
    label_smoothing=0.1,
    warmup_epochs=2,
    data_on_device=False,
    channels_last=True,
    amp_bf16=True,
    compile=True,
    weight_decay_params="no_norm_bias",
)


def test_every_recipe_field_is_set_by_its_flag_under_its_study_file_name() -> None:
    argv = []
    for field in dataclasses.fields(Recipe):
        value = getattr(NOT_DEFAULT, field.name)
        assert value != field.default, f"NOT_DEFAULT leaves {field.name} at its default"
        flag = "--" + field.name.replace("_", "-")
        if value is True and field.name not in ("data_on_device", "channels_last"):
            argv.append(flag)
        elif isinstance(value, bool):
            argv += [flag, "on" if value else "off"]
        elif isinstance(value, tuple):
            argv += [flag, ",".join(map(str, value))]
        else:
            argv += [flag, str(value)]
    parser = argparse.ArgumentParser()
    add_trial_arguments(parser)
    assert trial_config_from_args(parser.parse_args(argv)).recipe == NOT_DEFAULT
    assert trial_config_from_args(parser.parse_args([])).recipe == Recipe()


def test_json_is_strict_when_a_loss_is_nan(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from robustbench_opt.trial import single

    real_step = single.optimizer_step
    monkeypatch.setattr(single, "optimizer_step", lambda *args: real_step(*args) * float("nan"))
    code, out, _ = run_main(["train", "--epochs", "2", "--device", "cpu", "--json"], capsys)
    assert code == 0

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    result = json.loads(out, parse_constant=reject)
    assert result["status"] == "diverged"
    assert result["epochs"][0]["train_loss"] is None  # NaN in the TrialResult, null in JSON


def test_hyperparameter_flags_set_the_optimizer_keywords_and_refuse_what_it_lacks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_trial_arguments(parser)
    config = trial_config_from_args(parser.parse_args(["--beta1", "0.8", "--eps", "1e-6"]))
    assert config.optimizer_kwargs == {"betas": (0.8, 0.999), "eps": 1e-6}  # adam's beta2 kept
    config = trial_config_from_args(
        parser.parse_args(["--optimizer", "sam", "--opt", "base=momentum", "--momentum", "0.5"])
    )
    assert config.optimizer_kwargs == {"base": "momentum", "momentum": 0.5}
    for argv, needle in [
        (["--optimizer", "sgd", "--beta1", "0.9"], "'sgd' has no hyperparameter 'beta1'"),
        (["--beta2", "1.0"], "--beta2 1: must be in [0, 1)"),
        (["--beta1", "0.9", "--opt", "betas=[0.9,0.99]"], "both set beta1"),
    ]:
        code, _, err = run_main(["train", *argv, "--epochs", "1"], capsys)
        assert code == 2 and needle in err and err.count("\n") == 1, err
