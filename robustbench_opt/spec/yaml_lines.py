"""Study-file YAML read into plain data plus the line of every key path, for one-line errors."""

from __future__ import annotations

import re
from typing import Any

import yaml

from robustbench_opt.errors import UserError

Key = tuple[str | int, ...]  # a key path: ("optimizers", 1, "kwargs")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-3` (no dot) as a float, as users expect."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, where: str) -> tuple[Any, dict[Key, int]]:
    """Plain Python data plus the 1-based line of every key path."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise UserError(f"{where}: the study file is empty; see the schema in the README")
        lines: dict[Key, int] = {}
        data = _construct(loader, node, (), lines, where)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = " ".join(f"{err.context or ''} {err.problem or ''}".split())
        at = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
        raise UserError(f"{where}:{at}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as err:
        raise UserError(f"{where}: YAML error: {' '.join(str(err).split())}") from None
    finally:
        loader.dispose()
    return data, lines


def dotted(key: Key) -> str:
    """`optimizers[1].kwargs`; the empty path is "(top level)"."""
    out = ""
    for part in key:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


def _construct(
    loader: _Loader, node: yaml.Node, key: Key, lines: dict[Key, int], where: str
) -> Any:
    lines.setdefault(key, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<: *anchor)
        out: dict[str, Any] = {}
        for knode, vnode in node.value:
            name = loader.construct_object(knode, deep=True)
            line = knode.start_mark.line + 1
            if not isinstance(name, str):
                raise UserError(f"{where}:{line}: key {name!r} must be a string")
            if name in out:
                raise UserError(
                    f"{where}:{line}: {dotted(key + (name,))}: duplicate key; "
                    f"first given on line {lines[key + (name,)]}; keep one"
                )
            lines[key + (name,)] = line
            out[name] = _construct(loader, vnode, key + (name,), lines, where)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, v, key + (i,), lines, where) for i, v in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
