"""The checkers of a multi-workload study (`workloads:` instead of `dataset` and `model`)."""

from __future__ import annotations

import json
from typing import Any

from robustbench_opt.spec.checks import NAME_PATTERN, Checker, Source, kind
from robustbench_opt.spec.study import StudySpec, Workload
from robustbench_opt.spec.yaml_lines import Key


def workloads(entry: Checker) -> Checker:
    """A non-empty list of workloads, each a mapping checked by `entry`, none repeated."""

    def check(src: Source, value: Any, key: Key) -> tuple[Workload, ...]:
        if not isinstance(value, list) or not value:
            raise src.error(
                key,
                f"expected a non-empty list of workloads ({{dataset, model}} each), got "
                f"{kind(value)}; or drop workloads and set dataset and model",
            )
        out: list[Workload] = []
        for i, item in enumerate(value):
            workload = entry(src, item, key + (i,))
            if not NAME_PATTERN.match(workload.name):
                raise src.error(
                    key + (i, "name"),
                    f"{workload.name!r} is not a valid workload name; use letters, digits, _ . -",
                )
            for j, earlier in enumerate(out):
                if earlier.name == workload.name:
                    raise src.error(
                        key + (i,),
                        f"workload name {workload.name!r} is already workloads[{j}]'s; give "
                        "each workload a distinct name",
                    )
                if _same(earlier, workload):
                    raise src.error(
                        key + (i,),
                        f"workloads[{i}] repeats workloads[{j}] (same dataset, model and "
                        "recipe); drop one",
                    )
            out.append(workload)
        return tuple(out)

    return check


def _same(a: Workload, b: Workload) -> bool:
    recipe = json.dumps(a.recipe, sort_keys=True) == json.dumps(b.recipe, sort_keys=True)
    return (a.dataset, a.model) == (b.dataset, b.model) and recipe


def workloads_given(src: Source, spec: StudySpec) -> None:
    """Either `dataset` and `model`, or `workloads`: one of the two, whole."""
    if spec.workloads is not None:
        for name in ("dataset", "model"):
            if (name,) in src.lines:
                raise src.error(
                    (name,),
                    "a study with workloads names its datasets and models in them; move "
                    f"{name} into each workload",
                )
        return
    for name in ("dataset", "model"):
        if getattr(spec, name) is None:
            raise src.error(
                (),
                f"missing required key {name!r}; add it (or list workloads, each with a "
                "dataset and a model)",
            )
