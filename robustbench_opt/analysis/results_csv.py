"""Read results measured elsewhere from a CSV file into rows for `Store.import_cells`.

Columns: optimizer, lr, weight_decay, test_acc (required); variant, seed, diverged,
best_test_acc, epochs (optional). Unknown columns are an error, not ignored. Accuracy unit:
`auto` reads a column as percent when any of its values exceeds 1, else as fractions;
`percent` and `fraction` force it. An empty test_acc is allowed only on a diverged row.
"""

from __future__ import annotations

import csv
import math
from importlib import resources
from pathlib import Path

import pandas as pd

from robustbench_opt.errors import UserError, unknown

REQUIRED = ("optimizer", "lr", "weight_decay", "test_acc")
OPTIONAL = ("variant", "seed", "diverged", "best_test_acc", "epochs")
UNITS = ("auto", "percent", "fraction")
PAPER_TABLES = ("paper_table1", "paper_table2", "paper_table3")
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


def paper_table_path(name: str) -> Path:
    """Path of a results CSV shipped with the package (the seed paper's Tables 1-3)."""
    if name not in PAPER_TABLES:
        raise unknown("paper table", name, PAPER_TABLES)
    return Path(str(resources.files("robustbench_opt.analysis") / "data" / f"{name}.csv"))


def read_results_csv(path: str | Path, unit: str = "auto") -> tuple[list[dict], str]:
    """Validated rows (accuracies as fractions) ready for `Store.import_cells`, and the unit the
    accuracies were read in ("percent" or "fraction")."""
    if unit not in UNITS:
        raise unknown("accuracy unit", unit, UNITS, "set acc_unit to one of these", ("acc_unit",))
    frame = _read(Path(path))
    columns = list(frame.columns)
    for column in columns:
        if column not in REQUIRED + OPTIONAL:
            raise unknown(
                f"column in {path}:", column, REQUIRED + OPTIONAL, "rename or drop that column"
            )
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise UserError(
            f"{path} lacks column(s) {', '.join(missing)}; required: {', '.join(REQUIRED)}"
            f" (optional: {', '.join(OPTIONAL)})"
        )
    if frame.empty:
        raise UserError(f"{path} has a header but no rows; add one row per measured cell")
    lines = frame.index + 2  # header is line 1
    for column in ("optimizer",) + (("variant",) if "variant" in columns else ()):
        empty = frame[column].str.strip() == ""
        if empty.any():
            raise UserError(f"{path} line {lines[empty.argmax()]}: empty {column}; fill it in")
    diverged = _booleans(frame, "diverged", path) if "diverged" in columns else None
    numbers = {
        c: _numbers(frame, c, path)
        for c in ("lr", "weight_decay", "test_acc", "best_test_acc", "seed", "epochs")
        if c in columns
    }
    _check(numbers["lr"] > 0, numbers["lr"].notna(), frame, path, "lr", "must be > 0")
    wd = numbers["weight_decay"]
    _check(wd >= 0, wd.notna(), frame, path, "weight_decay", "must be >= 0")
    for column in ("lr", "weight_decay"):
        absent = numbers[column].isna()
        if absent.any():
            raise UserError(f"{path} line {lines[absent.argmax()]}: empty {column}; fill it in")
    acc = numbers["test_acc"]
    no_acc = acc.isna() & ~(diverged if diverged is not None else False)
    if no_acc.any():
        raise UserError(
            f"{path} line {lines[no_acc.argmax()]}: empty test_acc on a row that did not "
            "diverge; fill it in or set diverged=true"
        )
    scale = _scale(acc, unit, path)
    for column in ("test_acc", "best_test_acc"):
        if column in numbers:
            numbers[column] = numbers[column] / scale
            values = numbers[column]
            bounds = f"is outside 0..{'100' if scale == 100 else '1'} ({_unit_name(scale)})"
            ok = (values >= 0) & (values <= 1)
            _check(ok, values.notna(), frame, path, column, bounds, ("acc_unit",))
    for column in ("seed", "epochs"):
        if column in numbers:
            values = numbers[column]
            ok = (values == values.round()) & (values >= 0)
            _check(ok, values.notna(), frame, path, column, "must be a whole number >= 0")
    rows = []
    for i in range(len(frame)):
        row = {
            "optimizer": frame["optimizer"].iat[i].strip(),
            "variant": frame["variant"].iat[i].strip() if "variant" in columns else "default",
            "lr": float(numbers["lr"].iat[i]),
            "weight_decay": float(numbers["weight_decay"].iat[i]),
            "seed": _int_or(numbers.get("seed"), i, 0),
            "final_test_acc": _float_or_none(numbers["test_acc"], i),
            "diverged": bool(diverged.iat[i]) if diverged is not None else False,
        }
        if "best_test_acc" in numbers:
            row["best_test_acc"] = _float_or_none(numbers["best_test_acc"], i)
        if "epochs" in numbers:
            row["epochs"] = _int_or(numbers["epochs"], i, None)
        rows.append(row)
    _no_duplicates(rows, path)
    return rows, "percent" if scale == 100 else "fraction"


def _read(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(f"no such file {str(path)!r}; pass the path of a CSV file")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = [c.strip() for c in next(csv.reader(handle), [])]
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, csv.Error) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot read {path} as CSV ({first}); fix the file") from err
    duplicated = sorted({c for c in header if header.count(c) > 1})
    if duplicated:
        raise UserError(f"{path} has column {duplicated[0]!r} more than once; keep one")
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _numbers(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    text = frame[column].str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = values.isna() & (text != "") | values.isin([math.inf, -math.inf])
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise UserError(
            f"{path} line {i + 2}: {column} {text.iat[i]!r} is not a finite number; fix it"
        )
    return values.astype(float)


def _booleans(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    text = frame[column].str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise UserError(
            f"{path} line {i + 2}: {column} {frame[column].iat[i]!r} is not true/false; "
            "use true, false, 1, 0, yes or no"
        )
    return text.isin(_TRUE)


def _check(
    ok: pd.Series,
    present: pd.Series,
    frame: pd.DataFrame,
    path: Path,
    column: str,
    what: str,
    settings: tuple[str, ...] = (),
) -> None:
    bad = present & ~ok
    if bad.any():
        i = int(bad.to_numpy().argmax())
        message = f"{path} line {i + 2}: {column} {frame[column].iat[i]!r} {what}"
        raise UserError(message, settings)


def _scale(acc: pd.Series, unit: str, path: Path) -> float:
    if unit == "percent":
        return 100.0
    if unit == "fraction":
        return 1.0
    return 100.0 if (acc > 1).any() else 1.0


def _unit_name(scale: float) -> str:
    return "read as percent" if scale == 100 else "read as fractions; set acc_unit to percent"


def _float_or_none(values: pd.Series, i: int) -> float | None:
    value = values.iat[i]
    return None if pd.isna(value) else float(value)


def _int_or(values: pd.Series | None, i: int, default: int | None) -> int | None:
    if values is None or pd.isna(values.iat[i]):
        return default
    return int(values.iat[i])


def _no_duplicates(rows: list[dict], path: Path) -> None:
    seen: dict[tuple, int] = {}
    for i, row in enumerate(rows):
        key = tuple(row[k] for k in ("optimizer", "variant", "lr", "weight_decay", "seed"))
        if key in seen:
            raise UserError(
                f"{path} line {i + 2} repeats line {seen[key] + 2} (same optimizer, variant, "
                "lr, weight_decay, seed); give each repeat its own seed or drop it"
            )
        seen[key] = i
