"""`robustbench-opt bench`: both paths do the same work and report comparable records."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from robustbench_opt.bench import bench, plain_batches
from robustbench_opt.cli import main
from robustbench_opt.config import Recipe, TrialConfig
from robustbench_opt.data import load_splits
from robustbench_opt.data.device import device_batches
from robustbench_opt.errors import UserError

CPU = torch.device("cpu")


def _config(**recipe: object) -> TrialConfig:
    return TrialConfig(
        "digits", "simple_cnn", "adam", 1e-3, 0.0, recipe=Recipe(**recipe), device="cpu"
    )


def test_plain_and_device_batches_carry_the_same_normalised_images():
    config = _config(batch_size=64)
    splits = load_splits("digits")
    plain = torch.cat([x for x, _ in plain_batches(splits, config, CPU, workers=0)(1)])
    ours = torch.cat([x for x, _ in device_batches(splits, config.recipe, CPU, 0, 1)])
    assert plain.shape == ours.shape == (len(splits.train_y) // 64 * 64, 1, 8, 8)
    expected = ((splits.train_x.float() / 255 - splits.mean[0]) / splits.std[0]).flatten(1)
    for images in (plain, ours):  # every image is a training image, normalised the same way
        gap = torch.cdist(images.flatten(1), expected, compute_mode="donot_use_mm_for_euclid_dist")
        assert gap.amin(dim=1).max() < 1e-4


def test_bench_times_both_paths_on_equal_work():
    records = bench(_config(batch_size=128, augment=("crop_flip",)), epochs=1, warmup=1)
    plain, ours = records
    assert (plain.path, ours.path) == ("plain", "device")
    assert plain.images == ours.images == 1438 // 128 * 128
    assert plain.speedup == 1.0
    assert ours.speedup == pytest.approx(ours.images_per_s / plain.images_per_s)
    assert plain.seconds_per_epoch == pytest.approx(plain.images / plain.images_per_s)
    assert len(ours.epoch_seconds) == 1 and ours.seconds_per_epoch == ours.epoch_seconds[0]
    assert plain.device.startswith("cpu") and plain.memory_kind == "cpu peak rss delta"
    assert ours.workers == 0 and not any(ours.options.values())  # CPU: no bf16, flags off
    assert ours.config["recipe"]["augment"] == ["crop_flip"] and "torch" in ours.versions


def test_cli_json_and_table(capsys):
    args = ["bench", "--epochs", "1", "--warmup", "1", "--batch-size", "256", "--device", "cpu"]
    assert main([*args, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in records] == ["plain", "device"]
    assert all(r["images_per_s"] > 0 and r["images"] == 5 * 256 for r in records)
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "images/s" in table and "plain" in table and "device" in table and "cpu (" in table


def test_warmup_of_zero_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--warmup", "0"])
    assert exit_info.value.code == 2
    assert "--warmup: must be >= 1, got '0'" in capsys.readouterr().err
    with pytest.raises(UserError, match="warmup must be at least 1 epoch"):
        bench(_config(), epochs=1, warmup=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_on_cuda_uses_the_speed_options_and_cuda_memory():
    config = _config(batch_size=128, augment=("crop_flip",), channels_last=True, amp_bf16=True)
    plain, ours = bench(dataclasses.replace(config, device="cuda"), epochs=1, warmup=1)
    assert plain.memory_kind == ours.memory_kind == "cuda peak allocated delta"
    assert ours.options == {"channels_last": True, "amp_bf16": True, "compile": False}
    assert not any(plain.options.values()) and ours.peak_memory_bytes > 0
    assert ours.device.startswith("cuda")
