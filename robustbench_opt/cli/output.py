"""How commands print frames: one table style for every command, CSV and JSON for machines."""

from __future__ import annotations

import sys

import pandas as pd

WIDTH = 100  # terminal columns a table fits by default


def print_frame(
    frame: pd.DataFrame,
    fmt: str = "table",
    title: str = "",
    notes: list[str] = (),
    wide: bool = False,
) -> None:
    """A frame as a rich table on the terminal (fitting WIDTH columns unless `wide`, which
    prints every column at its natural width), or as CSV or JSON records on stdout."""
    if fmt == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")
    else:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(title) or None, show_lines=False)
        for k, column in enumerate(frame.columns):
            numeric = pd.api.types.is_numeric_dtype(frame[column])
            table.add_column(
                escape(str(column)), justify="left" if k < 2 and not numeric else "right"
            )
        for row in frame.itertuples(index=False):
            table.add_row(*(escape(str(v)) for v in row))
        width = WIDTH
        if wide:  # every column at its natural width
            width = max(WIDTH, Console(width=10_000).measure(table).maximum)
        console = Console(width=width)
        console.print(table)
        for note in notes:
            console.print(note, markup=False, style="dim")
