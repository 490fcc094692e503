"""Declared settings: kinds from types, bounds with open and closed ends, declaration errors."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import pytest

from robustbench_opt.config import RECIPE_RULES, Recipe
from robustbench_opt.rules import rules_of, setting


def test_every_recipe_field_has_one_rule_with_its_default_and_a_help_line() -> None:
    assert list(RECIPE_RULES) == [f.name for f in dataclasses.fields(Recipe)]
    for field in dataclasses.fields(Recipe):
        rule = RECIPE_RULES[field.name]
        assert rule.default == field.default and rule.help, field.name
        assert rule.violation(rule.default) is None, field.name


def test_kinds_come_from_the_field_types() -> None:
    kinds = {name: (r.kind, r.item, r.optional) for name, r in RECIPE_RULES.items()}
    assert kinds["epochs"] == ("int", None, False)
    assert kinds["step_gamma"] == ("float", None, False)
    assert kinds["schedule"] == ("choice", None, False)
    assert kinds["step_milestones"] == ("tuple", "int", False)
    assert kinds["augment"] == ("tuple", "choice", False)
    assert kinds["wd_off_fraction"] == ("float", None, True)
    assert kinds["data_on_device"] == ("bool", None, True)
    assert kinds["compile"] == ("bool", None, False)
    assert RECIPE_RULES["schedule"].choices == ("constant", "step", "cosine", "plateau")


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        ("plateau_factor", [1e-9, 0.5, 1 - 1e-9], [0.0, 1.0]),  # (0, 1): both ends open
        ("cutmix_prob", [0.0, 0.5, 1.0], [-1e-9, 1 + 1e-9]),  # [0, 1]: both ends closed
        ("step_gamma", [1e-9, 10.0], [0.0, -1.0]),  # > 0
        ("crop_padding", [0, 8], [-1]),  # >= 0
    ],
)
def test_bounds_keep_their_open_and_closed_ends(
    name: str, inside: list[float], outside: list[float]
) -> None:
    rule = RECIPE_RULES[name]
    assert all(rule.within(v) for v in inside)
    assert not any(rule.within(v) for v in outside)
    assert rule.violation(outside[0]) == (None, f"must be {rule.expected}, got {outside[0]!r}")


def test_expected_names_the_bounds_as_messages_show_them() -> None:
    expected = {name: r.expected for name, r in RECIPE_RULES.items()}
    assert expected["plateau_factor"] == "a number in (0, 1)"
    assert expected["cutmix_prob"] == "a probability in [0, 1]"
    assert expected["step_milestones"] == "an epoch >= 1"
    assert expected["step_gamma"] == "a number > 0"
    e = RECIPE_RULES["epochs"]  # an infinite end is open: no bound
    assert (e.low, e.low_open, e.high, e.high_open) == (1, False, math.inf, True)


def test_a_tuple_rule_names_the_bad_item() -> None:
    assert RECIPE_RULES["step_milestones"].violation((3, 0)) == (1, "must be an epoch >= 1, got 0")
    index, problem = RECIPE_RULES["augment"].violation(("crop", "mixup"))
    assert index == 1 and "unknown augmentation 'mixup'" in problem


def test_declarations_that_cannot_make_a_rule_are_refused() -> None:
    @dataclass
    class Undeclared:
        n: int = 1

    @dataclass
    class OptionalWithoutMeaning:
        n: int | None = setting(None, "a count")

    @dataclass
    class ChoicesWithoutNoun:
        mode: Literal["a", "b"] = setting("a", "a mode")

    @dataclass
    class ListOfFloats:
        xs: tuple[float, ...] = setting((), "numbers")

    with pytest.raises(TypeError, match="not declared"):
        rules_of(Undeclared)
    with pytest.raises(TypeError, match="none="):
        rules_of(OptionalWithoutMeaning)
    with pytest.raises(TypeError, match="noun="):
        rules_of(ChoicesWithoutNoun)
    with pytest.raises(TypeError, match="none of int"):
        rules_of(ListOfFloats)
    with pytest.raises(TypeError, match="one lower bound"):
        setting(1, "a count", gt=0, ge=1)
