"""`robustbench-opt bench`: both paths do the same work and report comparable records."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from robustbench_opt.bench import (
    PACK_PATHS,
    PATHS,
    bench,
    bench_pack,
    plain_batches,
    prepare_pack_path,
    prepare_path,
    synthetic_splits,
)
from robustbench_opt.cli import main
from robustbench_opt.config import Recipe, TrialConfig
from robustbench_opt.data import load_splits
from robustbench_opt.data.device import device_batches
from robustbench_opt.errors import UserError
from robustbench_opt.trial.build import pack_configs

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


def test_bench_pack_times_k_cells_one_after_another_and_packed_on_equal_work():
    sequential, packed = bench_pack(_config(batch_size=256), cells=2, epochs=1, warmup=1)
    assert (sequential.path, packed.path) == ("sequential", "packed")
    assert sequential.images == packed.images == 2 * (1438 // 256 * 256)  # both cells' batches
    assert sequential.speedup == 1.0
    assert packed.speedup == pytest.approx(packed.images_per_s / sequential.images_per_s)
    assert packed.options["cells"] == 2 and packed.peak_memory_bytes >= 0
    assert sequential.memory_kind == "cpu peak rss delta"


def test_synthetic_cifar_shaped_splits_need_no_download():
    splits = synthetic_splits(64)
    assert splits.train_x.shape == (64, 3, 32, 32) and splits.train_x.dtype == torch.uint8
    assert splits.num_classes == 10 and len(splits.test_y) == 512
    assert torch.equal(synthetic_splits(64).train_x, splits.train_x)  # seeded


def test_cli_bench_pack_on_synthetic_data_and_its_errors(capsys):
    args = ["bench", "--pack", "2", "--synthetic", "128", "--epochs", "1", "--batch-size", "64"]
    assert main([*args, "--device", "cpu", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in records] == ["sequential", "packed"]
    assert all(r["images"] == 2 * 128 for r in records)
    assert main(["bench", "--synthetic", "128"]) == 2
    assert "--synthetic only applies with --pack K" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--pack", "0"])


def test_every_bench_path_builds_its_cells_as_a_trial_does_the_decay_policy_included():
    """A `no_norm_bias` recipe reaches bench: each path's optimizer has the decayed weights and
    an undecayed group of biases, as the trial's own build gives (`build_cells`)."""
    config = dataclasses.replace(
        _config(batch_size=256, weight_decay_params="no_norm_bias"),
        optimizer="adamw",
        weight_decay=1e-2,
    )
    splits = load_splits("digits")
    paths = [prepare_path(name, config, splits, CPU, warmup=1) for name in PATHS]
    paths += [
        prepare_pack_path(name, pack_configs(config, 2), splits, CPU, warmup=1)
        for name in PACK_PATHS
    ]
    for path in paths:
        assert len(path.cells) == (1 if path.name in PATHS else 2)
        for cell in path.cells:
            decayed, undecayed = cell.optimizer.optimizer.param_groups
            assert decayed["weight_decay"] == 1e-2 and all(p.ndim >= 2 for p in decayed["params"])
            assert undecayed["weight_decay"] == 0.0 and len(undecayed["params"]) == 4
