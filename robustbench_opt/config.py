"""The typed boundary between a study and one trial.

A `TrialConfig` is everything one grid cell needs to train, fully resolved: nothing in `train`
looks anything up elsewhere. It is plain data (no torch), serialises to JSON, and its
`cell_id` (a stable hash of the config plus the study name) is the cell's identity in the
results database. A `TrialResult` is what a trial really ran and measured.

Identity is what is measured. A cell's identity (`TrialConfig.cell_id`) and a study's
(`spec.identity`) leave out where a trial runs (`NOT_IDENTITY`: device, data location) and the
speed switches (`SPEED_SWITCHES`: data path, memory format, torch.compile), which change how fast
a trial trains but not what it computes beyond float rounding, so toggling them resumes the same
cells. bf16 autocast (`amp_bf16`) IS identity: it runs the forward pass in an 8-bit-mantissa
format, a different computation whose accuracy can differ, not just a faster one.

`RECIPE_RULES` is the one table of what each recipe field is (kind, default, valid values, help),
read from its declaration on `Recipe`. The study-file checks (`spec`), the trainer's
(`check_recipe`) and the `train`/`bench` flags are all made from it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from robustbench_opt.errors import UserError
from robustbench_opt.rules import Rule, rules_of, setting

Schedule = Literal["constant", "step", "cosine", "plateau"]
Augmentation = Literal["crop", "crop_flip", "brightness", "trivialaugment"]
# Which parameters weight decay acts on: every one, or (nanoGPT's groups) only tensors with
# ndim >= 2, so BatchNorm/LayerNorm weights and every bias are not decayed.
WeightDecayParams = Literal["all", "no_norm_bias"]
SCHEDULES: tuple[str, ...] = typing.get_args(Schedule)
AUGMENTATIONS: tuple[str, ...] = typing.get_args(Augmentation)
WEIGHT_DECAY_PARAMS: tuple[str, ...] = typing.get_args(WeightDecayParams)
NOT_IDENTITY: tuple[str, ...] = ("device", "data_dir", "download")  # TrialConfig keys
# What may differ within a pack: a cell's lr, weight decay, seed, optimizer keywords (search
# axes such as beta1) and its point in a sampled design; everything else is shared.
PER_CELL: tuple[str, ...] = ("lr", "weight_decay", "seed", "optimizer_kwargs", "point", "axes")
SPEED_SWITCHES: tuple[str, ...] = ("data_on_device", "channels_last", "compile")  # Recipe keys
# Recipe fields added after cells were first stored: they enter an identity only when set away
# from their default, so the cells stored before they existed keep their identity.
LATER_FIELDS: Mapping[str, Any] = MappingProxyType(
    {"weight_decay_params": "all", "label_smoothing": 0.0, "warmup_epochs": 0}
)


@dataclass(frozen=True)
class Recipe:
    """How a model is trained, independent of the optimizer and its hyperparameters.

    Each field is declared once (`rules.setting`): default, help line, valid values; its kind
    is its type. `RECIPE_RULES` holds what they declare.
    """

    epochs: int = setting(10, "passes over the training split", ge=1)
    batch_size: int = setting(128, "images per optimizer step", ge=1)
    schedule: Schedule = setting("constant", "lr schedule, stepped once per epoch", noun="schedule")
    step_milestones: tuple[int, ...] = setting(
        (), "step schedule: epochs at which lr *= step_gamma", ge=1, noun="an epoch"
    )
    step_gamma: float = setting(0.1, "step schedule: multiplicative factor", gt=0)
    plateau_factor: float = setting(
        0.5, "plateau schedule: lr *= plateau_factor when the monitored loss stalls", gt=0, lt=1
    )
    plateau_patience: int = setting(
        3, "plateau schedule: epochs without improvement before cutting", ge=0
    )
    augment: tuple[Augmentation, ...] = setting(
        (), "augmentations, applied in this order", noun="augmentation"
    )
    crop_padding: int = setting(4, "crop_flip: pixels of zero padding before the random crop", ge=0)
    brightness: float = setting(0.5, "brightness: max absolute delta on [0, 1] images", ge=0)
    cutmix_prob: float = setting(
        0.0,
        "probability a batch is CutMixed (0 = off; the paper uses 1.0)",
        ge=0,
        le=1,
        noun="a probability",
    )
    cutmix_alpha: float = setting(1.0, "CutMix lambda ~ Beta(alpha, alpha)", gt=0)
    wd_off_fraction: float | None = setting(
        None,
        "weight decay set to 0 after this fraction of epochs (the paper: 0.75)",
        ge=0,
        le=1,
        noun="a fraction",
        none="never",
    )
    early_stopping_patience: int | None = setting(
        None,
        "stop after this many epochs without a val (else test) accuracy gain",
        ge=1,
        none="never",
    )
    divergence_factor: float = setting(
        10.0, "diverged: epoch mean train loss > divergence_factor x first-batch loss", gt=0
    )
    sam_equal_compute: bool = setting(
        False, "two-pass (SAM-family) optimizers train half the epochs, as the SAM paper does"
    )
    label_smoothing: float = setting(
        0.0,
        "training loss: cross-entropy against labels smoothed by this share (0 = off; "
        "test and val losses stay unsmoothed)",
        ge=0,
        lt=1,
        noun="a share",
    )
    warmup_epochs: int = setting(
        0,
        "linear lr warmup: during epoch t < warmup_epochs the schedule's lr is scaled by "
        "(t + 1) / (warmup_epochs + 1)",
        ge=0,
    )
    # Speed switches (SPEED_SWITCHES, and amp_bf16 which is identity); recorded with the trial.
    data_on_device: bool | None = setting(
        None, "keep data and augmentation on the device (auto: when it fits)", none="auto"
    )
    channels_last: bool | None = setting(
        None, "NHWC memory format (auto: on for CUDA)", none="auto"
    )
    amp_bf16: bool = setting(
        False, "bf16 autocast (CUDA only); other numerics, so part of the cell identity"
    )
    compile: bool = setting(False, "torch.compile the model")
    weight_decay_params: WeightDecayParams = setting(
        "all",
        "parameters weight decay acts on: all, or no_norm_bias (only tensors with ndim >= 2:"
        " no BatchNorm weights, no biases)",
        noun="weight-decay parameter policy",
    )

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, list) else v for k, v in self._as_plain.items()}

    @functools.cached_property
    def _as_plain(self) -> dict[str, Any]:
        """Computed once per recipe: a study's cells share their recipe objects."""
        return _plain(_fields(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        data = dict(data)
        for key in ("step_milestones", "augment"):
            if key in data and data[key] is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def recipe_identity(data: Mapping[str, Any], overrides: bool = False) -> dict[str, Any]:
    """The part of a `Recipe.to_dict()` (or of a variant's overrides) that is identity.

    Speed switches are reset to their defaults in a full recipe (so cells stored before this
    rule keep their identity) and dropped from overrides; `LATER_FIELDS` at their default go.
    """
    out = {k: v for k, v in data.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    defaults = _DEFAULT_RECIPE.to_dict()
    for key in SPEED_SWITCHES:
        if overrides:
            out.pop(key, None)
        else:
            out[key] = defaults[key]
    return out


RECIPE_RULES: Mapping[str, Rule] = rules_of(Recipe)


_DEFAULT_RECIPE = Recipe()


def check_recipe(recipe: Recipe) -> None:
    """Raises a UserError naming the setting (`recipe.epochs`) for a value no trial can run."""
    for name, rule in RECIPE_RULES.items():
        bad = rule.violation(getattr(recipe, name))
        if bad is not None:
            index, problem = bad
            where = f"recipe.{name}" + (f"[{index}]" if index is not None else "")
            raise UserError(f"{where}: {problem}; fix the value")
    if recipe.warmup_epochs and recipe.schedule == "plateau":
        raise UserError(
            f"recipe.warmup_epochs: {recipe.warmup_epochs} with the plateau schedule, which sets "
            "the lr itself; warmup applies to constant, step and cosine: set warmup_epochs to 0 "
            "or choose one of those"
        )


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
    # Index of the cell's point in its study's sampled design (sobol, random); None on a grid,
    # where the values are the point. Part of the identity only when set.
    point: int | None = None
    # The cell's value on each axis of its study's space (lr and weight_decay included), for
    # analysis and the Optuna params. Derived: the fields above hold them, so not identity.
    axes: dict[str, Any] = field(default_factory=dict)
    # The workload (of a multi-workload study) the cell belongs to; None in a one-workload
    # study. Part of the identity only when set.
    workload: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = _fields(self)  # the other fields are scalars
        data["recipe"] = self.recipe.to_dict()
        data["optimizer_kwargs"] = _plain(self.optimizer_kwargs)
        data["axes"] = _plain(self.axes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        data = dict(data)
        data["recipe"] = Recipe.from_dict(data.get("recipe", {}))
        return cls(**data)

    @property
    def optimizer_label(self) -> str:
        """The name results and reports show for this cell's optimizer."""
        return self.label or self.optimizer

    @functools.cached_property
    def pack_key(self) -> str:
        """Cells with equal keys can train as one pack: everything but PER_CELL is shared.
        Interned: a group's cells share one string."""
        data = self.to_dict()
        for key in PER_CELL:
            data.pop(key)
        return sys.intern(json.dumps(data, sort_keys=True))

    def cell_id(self, study: str) -> str:
        """Stable identity of this cell within `study`.

        Identity is what is measured (module docstring): the device, where the data lives
        (`data_dir`, `download`) and the recipe's speed switches are not part of it, so a study
        resumes on another machine, data location, data path or with torch.compile toggled.
        Remembered for the last study asked (planning, registration and scheduling of a study
        of 10^5 cells each ask for every id).
        """
        known = self.__dict__.get("_cell_id")  # frozen: kept beside the fields, as a cache
        if known is None or known[0] != study:
            data = self.to_dict()
            for key in NOT_IDENTITY:
                data.pop(key)
            for key in ("point", "workload"):  # unset: the identity cells had before them
                if data[key] is None:
                    data.pop(key)
            data.pop("axes")
            data["recipe"] = recipe_identity(data["recipe"])
            blob = json.dumps({"study": study, "config": data}, sort_keys=True)
            known = (study, hashlib.sha256(blob.encode()).hexdigest()[:16])
            self.__dict__["_cell_id"] = known
        return known[1]


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
    weight_decay_mode: str  # how decay is applied (l2 / decoupled / ...; see optim.registry)
    n_params: int
    device: str
    versions: dict[str, str]
    wall_seconds: float
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what the trial changed or ignored, and why
    # Which parameters were decayed: "all" (BatchNorm and biases included) or "no_norm_bias";
    # "all" for records stored before this field existed, which is what they ran.
    weight_decay_params: str = "all"
    host: str = ""  # the machine (on a cluster: the node or container) that trained it
    # How it ran, decided at its start (pack_size, data_on_device, channels_last, compile,
    # threads, cpu_heap_kept; in a study, trials_at_once: the run's workers, which the driver
    # adds): run-time choices, beside the recipe it was asked to run; {} before they were kept.
    runtime: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        data = dict(data)
        data["epochs"] = [EpochRecord(**e) for e in data["epochs"]]
        return cls(**data)


def _fields(instance: Any) -> dict[str, Any]:
    """A dataclass's fields, one level (`dataclasses.asdict` deep-copies: 10x slower, and
    a study of 10^5 cells computes every identity)."""
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively, so a dict survives a JSON round trip unchanged."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
