"""PNG export of the report's figures through kaleido and a local Chrome/Chromium."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go

from robustbench_opt.errors import UserError

WIDTH = 1400  # pixels; heights come from each figure's layout


def write_pngs(figures: dict[str, go.Figure], directory: str | Path) -> list[Path]:
    """Writes `<key>.png` per figure into `directory`; a missing browser is a one-line error."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for key, fig in figures.items():
        path = out / f"{key}.png"
        try:
            fig.write_image(path, format="png", width=WIDTH, height=fig.layout.height or 600)
        except RuntimeError as err:  # kaleido: no Chrome found, or the browser failed to start
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"cannot export PNG ({first}); install Chromium (apt-get install chromium) or "
                "point BROWSER_PATH at a Chrome/Chromium binary, or use the HTML report"
            ) from err
        written.append(path)
    return written
