"""The typed boundary between a study and one trial.

A `TrialConfig` is everything one grid cell needs to train, fully resolved: nothing in `train`
looks anything up elsewhere. It is plain data (no torch), serialises to JSON, and its
`cell_id` (a stable hash of the config plus the study name) is the cell's identity in the
results database. A `TrialResult` is what a trial really ran and measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Schedule = Literal["constant", "step", "cosine", "plateau"]
SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine", "plateau")
AUGMENTATIONS: tuple[str, ...] = ("crop", "crop_flip", "brightness", "trivialaugment")
NOT_IDENTITY: tuple[str, ...] = ("device", "data_dir", "download")  # TrialConfig keys


@dataclass(frozen=True)
class Recipe:
    """How a model is trained, independent of the optimizer and its hyperparameters."""

    epochs: int = 10  # full passes over the training split
    batch_size: int = 128  # images per optimizer step
    schedule: Schedule = "constant"  # lr schedule, stepped once per epoch
    step_milestones: tuple[int, ...] = ()  # step schedule: epochs at which lr *= step_gamma
    step_gamma: float = 0.1  # step schedule: multiplicative factor
    plateau_factor: float = 0.5  # plateau schedule: lr *= factor when the monitored loss stalls
    plateau_patience: int = 3  # plateau schedule: epochs without improvement before cutting
    augment: tuple[str, ...] = ()  # subset of AUGMENTATIONS, applied in that order
    crop_padding: int = 4  # crop_flip: pixels of zero padding before the random crop
    brightness: float = 0.5  # brightness: max absolute delta on [0, 1] images
    cutmix_prob: float = 0.0  # probability a batch is CutMixed (0 = off; the paper uses 1.0)
    cutmix_alpha: float = 1.0  # CutMix lambda ~ Beta(alpha, alpha)
    wd_off_fraction: float | None = None  # weight decay set to 0 after this fraction of epochs
    early_stopping_patience: int | None = None  # stop after this many epochs w/o val/test gain
    divergence_factor: float = 10.0  # diverged: epoch mean train loss > factor * initial loss
    sam_equal_compute: bool = False  # SAM-family optimizers train for half the epochs
    # Speed options (issue 5); recorded with the trial.
    data_on_device: bool | None = None  # None = auto: keep data on the device when it fits
    channels_last: bool | None = None  # NHWC memory format; None = auto: on for CUDA
    amp_bf16: bool = False  # bf16 autocast (CUDA only)
    compile: bool = False  # torch.compile the model

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        data = dict(data)
        for key in ("step_milestones", "augment"):
            if key in data and data[key] is not None:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass(frozen=True)
class TrialConfig:
    """One grid cell: optimizer x recipe variant x lr x weight decay x seed, fully resolved."""

    dataset: str
    model: str
    optimizer: str
    lr: float
    weight_decay: float
    recipe: Recipe = field(default_factory=Recipe)
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)  # fixed keywords (betas, rho)
    seed: int = 0
    data_dir: str | None = None  # CIFAR: local directory with the torchvision files
    download: bool = False  # CIFAR: allowed to download into data_dir
    val_fraction: float = 0.0  # share of the training split held out for validation
    variant: str = "default"  # recipe variant name within a study (ablations)
    label: str | None = (
        None  # optimizer's display name in a study (e.g. "sam_adam"); None = optimizer
    )
    device: str | None = None  # None = auto: cuda, then mps, then cpu

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["recipe"] = self.recipe.to_dict()
        return _plain(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        data = dict(data)
        data["recipe"] = Recipe.from_dict(data.get("recipe", {}))
        return cls(**data)

    @property
    def optimizer_label(self) -> str:
        """The name results and reports show for this cell's optimizer."""
        return self.label or self.optimizer

    def cell_id(self, study: str) -> str:
        """Stable identity of this cell within `study`.

        Excludes what does not change what is measured: the device, and where the data lives
        (`data_dir`, `download`), so a study resumes on another machine or data location.
        """
        data = self.to_dict()
        for key in NOT_IDENTITY:
            data.pop(key)
        blob = json.dumps({"study": study, "config": data}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EpochRecord:
    """Metrics of one epoch. Accuracies are fractions in [0, 1]; val_* are None without a split."""

    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float  # lr used during this epoch (first param group)
    seconds: float  # wall time of the epoch, evaluation included
    val_loss: float | None = None
    val_acc: float | None = None


@dataclass
class TrialResult:
    """What one trial ran and measured. `status` is "completed" or "diverged"."""

    status: Literal["completed", "diverged"]
    epochs: list[EpochRecord]
    final_test_acc: float
    best_test_acc: float  # best epoch chosen on the test set (optimistic; label it so)
    best_epoch: int
    test_acc_at_best_val: float | None  # test accuracy at the epoch with the best val accuracy
    best_val_epoch: int | None
    diverged_reason: str | None
    optimizer_kwargs: dict[str, Any]  # resolved kwargs passed to the optimizer
    weight_decay_mode: str
    n_params: int
    device: str
    versions: dict[str, str]
    wall_seconds: float
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what the trial changed or ignored, and why
    host: str = ""  # the machine (on a cluster: the node or container) that trained it

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        data = dict(data)
        data["epochs"] = [EpochRecord(**e) for e in data["epochs"]]
        return cls(**data)


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so a dict survives a JSON round trip unchanged."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
