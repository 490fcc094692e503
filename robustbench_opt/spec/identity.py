"""What a study measures: its identity, the hash of it, and the changes between two studies."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from robustbench_opt.config import recipe_identity

# Study keys that change how or where a study runs, not what it measures: editing them does not
# make a different study.
RUN_ONLY_KEYS: tuple[str, ...] = (
    "description",
    "data_dir",
    "download",
    "resources",
    "max_concurrent",
)


def identity(spec: dict[str, Any]) -> dict[str, Any]:
    """The part of `StudySpec.to_dict()` that defines what a study measures.

    Identity is what is measured (see `robustbench_opt.config`): the run-only keys and the
    recipe's speed switches (in the recipe and in every variant) are left out, and so is a
    sampled space's `points`: a larger sample of the same sequence is the same study, grown.
    """
    out = {k: v for k, v in spec.items() if k not in RUN_ONLY_KEYS}
    if "space" in out:
        out["space"] = {k: v for k, v in out["space"].items() if k != "points"}
    if "recipe" in out:
        out["recipe"] = recipe_identity(out["recipe"])
    if "variants" in out:
        out["variants"] = {
            name: recipe_identity(overrides, overrides=True)
            for name, overrides in out["variants"].items()
        }
    return out


def spec_hash(spec: dict[str, Any]) -> str:
    """Stable hash of what a study measures (its canonical dict less the run-only keys); the
    results database stores it with the study and a rerun must match it."""
    return hashlib.sha256(json.dumps(identity(spec), sort_keys=True).encode()).hexdigest()


def diff_specs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human lines for what changed between two `StudySpec.to_dict()` results."""
    lines: list[str] = []
    _diff(_keyed(old), _keyed(new), "", lines)
    old_labels = [o["label"] for o in old.get("optimizers") or []]
    new_labels = [o["label"] for o in new.get("optimizers") or []]
    if set(old_labels) == set(new_labels) and old_labels != new_labels:
        lines.append(f"optimizers: order {', '.join(old_labels)} -> {', '.join(new_labels)}")
    return lines


def _keyed(value: Any) -> Any:
    """Lists of optimizer entries become mappings by label, so diffs name entries."""
    if isinstance(value, dict):
        return {k: _keyed(v) for k, v in value.items()}
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, dict) and "label" in v for v in value)
    ):
        return {v["label"]: _keyed(v) for v in value}
    return value


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in old:
            if key not in new:
                out.append(f"{path or '(top level)'}: - {key}")
        for key in new:
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{path or '(top level)'}: + {key}")
            else:
                _diff(old[key], new[key], sub, out)
    elif old != new:
        out.append(f"{path}: {json.dumps(old)} -> {json.dumps(new)}")
