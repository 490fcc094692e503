"""The study-file schema: for each key of each section, its checker, whether it is required and
its default; and `load_study`, which reads a file through it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_opt.errors import UserError
from robustbench_opt.spec import checks as c
from robustbench_opt.spec import space_checks as sc
from robustbench_opt.spec import workloads as wc
from robustbench_opt.spec.study import OptimizerSpec, Resources, StudySpec, Workload
from robustbench_opt.spec.yaml_lines import Key, parse_yaml


@dataclass(frozen=True)
class Field:
    """One key of a section: its checker, and what an absent key is."""

    check: c.Checker
    required: bool = False
    default: Any = None  # an absent key is checked as this value
    default_from: str | None = None  # ... or takes this earlier key's checked value


Table = Mapping[str, Field]


def section(table: Table, build: Callable[..., Any]) -> c.Checker:
    """A checker of a mapping with the keys of `table`, each checked in table order; `build`
    receives the checked values as keywords."""
    required = tuple(name for name, f in table.items() if f.required)

    def check(src: c.Source, value: Any, key: Key) -> Any:
        c.mapping(src, value, key, tuple(table), required)
        out: dict[str, Any] = {}
        for name, f in table.items():
            if name not in value and f.default_from is not None:
                out[name] = out[f.default_from]
            else:
                out[name] = f.check(src, value.get(name, f.default), key + (name,))
        return build(**out)

    return check


LOG_RANGE: Table = {
    "log_range": Field(c.range_ends, required=True),
    "num": Field(c.range_num, required=True),
}
LRS = c.grid(positive=True, ranged=section(LOG_RANGE, c.log_spaced))
WEIGHT_DECAYS = c.grid(positive=False, ranged=section(LOG_RANGE, c.log_spaced))

OPTIMIZER_ENTRY: Table = {
    "name": Field(c.string, required=True),  # registry name (robustbench-opt optimizers)
    "label": Field(c.string, default_from="name"),
    "kwargs": Field(c.optimizer_kwargs),
    "lrs": Field(c.optional(LRS)),
    "weight_decays": Field(c.optional(WEIGHT_DECAYS)),
    "epochs": Field(c.optional(c.positive_int)),
    "space": Field(c.optional(sc.axes)),
}

WORKLOAD: Table = {
    "dataset": Field(c.string, required=True),
    "model": Field(c.string, required=True),
    "name": Field(c.string, default_from="dataset"),
    "recipe": Field(c.recipe_overrides, default={}),  # over the study's recipe
    "space": Field(c.optional(sc.axes)),  # over the study's axes, under each entry's
}

RESOURCES: Table = {
    "cpus": Field(c.cpus, default=1.0),
    "gpus": Field(c.gpus, default=0.0),
    "packing": Field(c.packing, default="auto"),
    "executor": Field(c.executor, default="auto"),
}

TOP_LEVEL: Table = {
    "name": Field(c.study_name, required=True),
    "description": Field(c.text, default=""),
    "dataset": Field(c.optional(c.string)),
    "data_dir": Field(c.optional(c.string)),
    "download": Field(c.boolean, default=False),
    "val_fraction": Field(c.fraction, default=0.0),
    "model": Field(c.optional(c.string)),
    "recipe": Field(c.recipe, default={}),
    "variants": Field(c.variants),
    "optimizers": Field(c.optimizers(section(OPTIMIZER_ENTRY, OptimizerSpec)), required=True),
    "lrs": Field(c.optional(LRS)),
    "weight_decays": Field(c.optional(WEIGHT_DECAYS)),
    "seeds": Field(c.seeds, default=[0]),
    "resources": Field(section(RESOURCES, Resources), default={}),
    "max_concurrent": Field(c.optional(c.positive_int)),
    "space": Field(c.optional(sc.space)),
    "workloads": Field(c.optional(wc.workloads(section(WORKLOAD, Workload)))),
}
_STUDY = section(TOP_LEVEL, StudySpec)


def load_study(path: str | Path) -> StudySpec:
    """Reads and validates a study file; any problem is a one-line UserError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(f"study file '{path}' not found; check the path") from None
    except OSError as err:
        raise UserError(f"cannot read study file '{path}': {err.strerror}") from None
    data, lines = parse_yaml(text, str(path))
    src = c.Source(str(path), lines)
    spec = _STUDY(src, data, ())
    wc.workloads_given(src, spec)
    sc.space_given(src, spec)
    if spec.space is None:
        c.grids_given(src, spec)
    c.registries(src, spec)
    sc.axes_fit(src, spec)
    return sc.mark_integers(spec)
