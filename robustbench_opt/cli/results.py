"""Results commands: studies, results, scores, table, report, import, serve.

Longer than 400 lines: each command's flags and its printing sit together; the figures, tables
and scores they print are built in `analysis` and `report`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import pandas as pd

from robustbench_opt.analysis.compare import (
    StudyScores,
    check_studies,
    performance_profiles,
    shared_optimizers,
    side_by_side,
    side_by_side_text,
)
from robustbench_opt.analysis.display import (
    MEASURE_UNITS,
    SCALES,
    axes_display,
    budget_display,
    scores_display,
    scores_notes,
)
from robustbench_opt.analysis.results import results_frame
from robustbench_opt.analysis.results_csv import UNITS, read_results_csv
from robustbench_opt.analysis.scores import MEASURES, METRICS, lr_wd_grid
from robustbench_opt.analysis.study import ScoredStudy, load_study, score_study
from robustbench_opt.analysis.tables import (
    KINDS,
    format_hparam,
    lr_optimizer_table,
    lr_wd_table,
    table_rows,
    variant_optimizer_table,
)
from robustbench_opt.analysis.uncertainty import LEVEL, RESAMPLES, SEED, compare_pair
from robustbench_opt.analysis.verdict import DEFAULT_MEASURE, verdict_lines
from robustbench_opt.analysis.workloads import CrossWorkload, cross_frame
from robustbench_opt.cli.argtypes import number, positive_int
from robustbench_opt.cli.output import print_frame
from robustbench_opt.errors import UserError
from robustbench_opt.states import STATES

FORMATS = ("table", "csv", "json")


def register(sub: argparse._SubParsersAction) -> None:
    """Adds this module's subcommands."""
    p = sub.add_parser("studies", help="list the studies in the database with their progress")
    _storage(p)
    _format(p)
    p.set_defaults(func=cmd_studies)

    p = sub.add_parser("results", help="every trial of a study")
    p.add_argument("study")
    p.add_argument("--optimizer", action="append", default=[], help="keep only this (repeatable)")
    p.add_argument("--variant", action="append", default=[], help="keep only this (repeatable)")
    p.add_argument("--state", action="append", default=[], choices=STATES)
    _storage(p)
    _format(p)
    p.set_defaults(func=cmd_results)

    p = sub.add_parser("scores", help="robustness scores per optimizer over its lr x wd grid")
    p.add_argument("study")
    _metric(p)
    _uncertainty(p)
    p.add_argument(
        "--pair", nargs=2, metavar=("A", "B"),
        help="A - B on --measure, with its interval and whether it excludes 0",
    )  # fmt: skip
    p.add_argument(
        "--default-cell", type=_lr_wd, metavar="LR,WD",
        help="the untuned setting tunability is measured against (default: the grid's centre)",
    )  # fmt: skip
    p.add_argument("--wide", action="store_true", help="every column (default: fits 100 columns)")
    p.add_argument(
        "--part", choices=("scores", "axes", "budget", "workloads"), default="scores",
        help="with --format csv/json: the scores, what each axis costs, E[best of k], or the "
        "cross-workload aggregate (ranks, profiles, transfer, Kendall's W)",
    )  # fmt: skip
    _storage(p)
    _format(p)
    p.set_defaults(func=cmd_scores)

    p = sub.add_parser("compare", help="several studies side by side, with performance profiles")
    p.add_argument("studies", nargs="+", metavar="STUDY", help="two or more studies")
    _metric(p)
    _uncertainty(p)
    p.add_argument("-o", "--output", help="also write an HTML report of the comparison here")
    _storage(p)
    _format(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("table", help="paper-style table (Table 1, 2 or 3 layout)")
    p.add_argument("study")
    p.add_argument("--kind", choices=KINDS, default="lr-wd")
    p.add_argument("--optimizer", help="lr-wd: the optimizer to show")
    p.add_argument("--variant", help="the recipe variant, when the study has several")
    p.add_argument("--lr", type=float, help="variant-optimizer: the learning rate to show")
    p.add_argument("--weight-decay", "--wd", type=float, help="the weight decay to show")
    _metric(p)
    _storage(p)
    p.add_argument("--format", choices=("table", "csv"), default="table")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("report", help="self-contained HTML report (or PNG figures)")
    p.add_argument("study")
    p.add_argument("-o", "--output", help="HTML file (default STUDY-report.html); png: a folder")
    p.add_argument("--format", choices=("html", "png"), default="html")
    p.add_argument("--figures", metavar="DIR", help="also write the figures as PNG into DIR")
    _metric(p)
    _storage(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("import", help="load results measured elsewhere from a CSV file")
    p.add_argument("file", help="CSV: optimizer, lr, weight_decay, test_acc [, variant, seed, ...]")
    p.add_argument("--study", required=True, help="name of the new study")
    p.add_argument("--acc-unit", choices=UNITS, default="auto",
                   help="auto: percent when any accuracy exceeds 1, else fractions")  # fmt: skip
    p.add_argument("--classes", type=positive_int, default=10, metavar="N",
                   help="classes of the data set the results were measured on; sets chance "
                   "accuracy for diverged cells (default: 10)")  # fmt: skip
    _storage(p)
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("serve", help="local web page listing studies and their live reports")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    _storage(p)
    p.set_defaults(func=cmd_serve)


def _storage(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--storage",
        help="database URL (default: $ROBUSTBENCH_STORAGE, else storage/robustbench.db)",
    )


def _format(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="table")


def _metric(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metric",
        choices=tuple(METRICS),
        default="final",
        help="final: last epoch; best: best epoch chosen on test (optimistic); "
        "val: epoch chosen on validation, test accuracy reported",
    )


def _uncertainty(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--measure", default=DEFAULT_MEASURE, choices=[m for m, i in MEASURES.items() if i.better],
        help=f"what the verdict ranks by (default {DEFAULT_MEASURE}: mean accuracy over the grid)",
    )  # fmt: skip
    p.add_argument("--level", type=number(float, gt=0, lt=1), default=LEVEL,
                   help="confidence level of the bootstrap intervals")  # fmt: skip
    p.add_argument("--resamples", type=positive_int, default=RESAMPLES,
                   help="bootstrap resamples")  # fmt: skip
    p.add_argument("--seed", type=int, default=SEED, help="bootstrap seed")


def _lr_wd(text: str) -> tuple[float, float]:
    try:
        lr, wd = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LR,WD such as 1e-3,0, got {text!r}") from None
    return lr, wd


def _store(url: str | None, create: bool = False):
    from robustbench_opt.storage import Store, resolve_url

    return Store(resolve_url(url), create=create)


def cmd_studies(args: argparse.Namespace) -> int:
    rows = [
        {
            "study": s.name,
            "source": s.source,
            "trials": s.n_cells,
            "finished %": f"{100 * (s.done + s.diverged) / s.n_cells:.0f}" if s.n_cells else "-",
            "done": s.done,
            "diverged": s.diverged,
            "failed": s.failed,
            "running": s.running,
            "pending": s.pending,
            "created": s.created.strftime("%Y-%m-%d %H:%M UTC"),
        }
        for s in _store(args.storage).list_studies()
    ]
    if not rows and args.format == "table":
        print("no studies yet; run one with `robustbench-opt run` or `robustbench-opt import`")
        return 0
    print_frame(pd.DataFrame(rows), args.format, "studies")
    return 0


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.2f}"


def cmd_results(args: argparse.Namespace) -> int:
    loaded = load_study(_store(args.storage), args.study)
    frame = results_frame(loaded.cells, args.optimizer, args.variant, args.state)
    if args.format != "table":
        print_frame(frame, args.format)
        return 0
    shown = pd.DataFrame(
        {
            "optimizer": frame["optimizer"],
            "variant": frame["variant"],
            "lr": frame["lr"].map(format_hparam),
            "wd": frame["weight_decay"].map(format_hparam),
            "seed": frame["seed"],
            "state": frame["state"],
            "final %": frame["final_test_acc"].map(_pct),
            "best % (on test)": frame["best_test_acc"].map(_pct),
            "epochs": frame["epochs_run"].map(lambda v: "-" if math.isnan(v) else f"{v:.0f}"),
            "seconds": frame["seconds"].map(lambda v: "-" if math.isnan(v) else f"{v:.1f}"),
        }
    )
    print_frame(shown, "table", f"{args.study}: {len(frame)} trials")
    return 0


def print_scores(scored: ScoredStudy, measure: str = DEFAULT_MEASURE, wide: bool = False) -> None:
    """The scores table, the verdict (ranked by `measure`) and the notes: what `scores` and
    `run` print."""
    space = not lr_wd_grid(scored.cells)
    shown = scores_display(scored.scores, scored.intervals, wide=wide, space=space)
    over = " / ".join(dict.fromkeys(scored.intervals["over"]))
    notes = scores_notes(scored.metric, scored.chance, over, scored.level, scored.resamples, space)
    print_frame(shown, "table", f"{scored.name}: robustness scores (%)", wide=wide)
    for part in scored.workloads or [scored]:  # one verdict per workload
        prefix = f"{part.name}: " if scored.workloads else ""
        for line in verdict_lines(part.scores, part.boots, part.intervals, measure, part.level):
            print(prefix + line)
    for note in notes:
        print(note)
    several = scored.scores["variant"].nunique() > 1
    if not scored.axes.empty:
        print_frame(
            axes_display(scored.axes, several), "table", f"{scored.name}: what each axis costs"
        )
        print(
            "sensitivity: mean accuracy lost to a non-best value of the axis, the other axes at "
            f"their best; importance: share of variance, {scored.importance_method}"
        )
        for warning in scored.edge_warnings:
            print(f"warning: {warning}")
    if not scored.budget.empty:
        print_frame(
            budget_display(scored.budget, several),
            "table",
            f"{scored.name}: E[best of k] % (k points tried at random; "
            f"{100 * scored.level:g}% bootstrap band over the points)",
        )
        if (scored.spec.get("space") or {}).get("design", "grid") != "grid":
            print(
                "over a sampled design, each mean estimates the expected accuracy under the "
                "space's distribution (a point drawn at random)"
            )
    if scored.cross is not None:
        print_cross(scored.name, scored.cross)


def print_cross(study: str, cross: CrossWorkload) -> None:
    """The aggregate over a multi-workload study's workloads: ranks, agreement, performance
    profiles, transfer, verdict."""
    label = MEASURES[cross.measure].label
    ranks = cross.ranks.map(lambda r: f"{r:g}").rename_axis("optimizer").reset_index()
    print_frame(ranks, "table", f"{study}: rank per workload by {label} (1 = best)")
    print(f"Kendall's W = {cross.kendall_w:.2f} (1: every workload ranks alike; 0: no agreement)")
    profiles = (100 * cross.profiles).round(0).astype(int).astype(str) + "%"
    print_frame(
        profiles.rename_axis("optimizer").reset_index(), "table",
        f"{study}: performance profile over workloads (share within tau x the best {label})",
    )  # fmt: skip
    transfer = pd.DataFrame(
        {
            "optimizer": cross.transfer["optimizer"],
            "one point for all": cross.transfer["point"].fillna("- (no shared point)"),
            "its mean %": cross.transfer["mean_acc"].map(_pct),
            "lost vs own best (pts)": cross.transfer["loss"].map(_pct),
        }
    )
    print_frame(
        transfer, "table", f"{study}: transfer: one hyperparameter point for every workload"
    )
    for line in cross.verdict:
        print(line)


def _cross_frame(scored: ScoredStudy) -> pd.DataFrame:
    if scored.cross is None:
        raise UserError(
            f"study {scored.name!r} has one workload, so it has no cross-workload aggregate; "
            "--part workloads needs a study with two or more workloads (choices: scores, axes, "
            "budget)"
        )
    return cross_frame(scored.cross)


def cmd_scores(args: argparse.Namespace) -> int:
    scored = score_study(
        _store(args.storage), args.study, args.metric, args.level, args.resamples, args.seed,
        args.default_cell,
    )  # fmt: skip
    if args.pair:
        diff = compare_pair(scored.scores, scored.boots, *args.pair, args.measure, args.level)
        scale = SCALES[MEASURES[args.measure].unit]
        print(
            f"{diff.a} - {diff.b} on {MEASURES[args.measure].label}: "
            f"{scale * diff.difference:+.2f} [{scale * diff.low:+.2f}, {scale * diff.high:+.2f}] "
            f"({100 * args.level:g}% bootstrap, {args.resamples} resamples): "
            + (
                "separable, the interval excludes 0"
                if diff.separable
                else "not separable, the interval includes 0"
            )  # fmt: skip
        )
        return 0
    if args.format != "table":
        parts = {
            "scores": lambda: scored.scores.merge(
                scored.intervals, on=["optimizer", "variant"], how="left"
            ),
            "axes": lambda: scored.axes.assign(importance_method=scored.importance_method),
            "budget": lambda: scored.budget,
            "workloads": lambda: _cross_frame(scored),
        }
        print_frame(parts[args.part](), args.format)
        return 0
    print_scores(scored, args.measure, args.wide)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    check_studies(args.studies)
    store = _store(args.storage)
    studies = [
        score_study(store, name, args.metric, args.level, args.resamples, args.seed)
        for name in args.studies
    ]
    long = side_by_side([StudyScores(s.name, s.scores, s.intervals) for s in studies], args.measure)
    shared = shared_optimizers(long)
    profiles = performance_profiles(long, args.measure) if shared else None
    if args.output:
        from robustbench_opt.report.compare import render_comparison

        path = _writable(args.output)
        path.write_text(
            render_comparison(long, profiles, args.measure, args.level), encoding="utf-8"
        )
        print(f"wrote {path}")
    axes = pd.concat([s.axes.assign(study=s.name) for s in studies], ignore_index=True)
    if args.format == "json":
        payload = {"measure": args.measure, "scores": json.loads(long.to_json(orient="records"))}
        if profiles is not None:
            payload["profiles"] = json.loads(profiles.reset_index().to_json(orient="records"))
        payload["axes"] = json.loads(axes.to_json(orient="records"))
        print(json.dumps(payload, indent=1))
        return 0
    if args.format == "csv":
        print_frame(long, "csv")
        return 0
    info = MEASURES[args.measure]
    table = side_by_side_text(long, args.measure)
    title = f"{info.label} ({MEASURE_UNITS[info.unit]}, {info.better} is better) per study"
    print_frame(table.reset_index(), "table", title)
    if profiles is None:
        print("performance profiles: no optimizer is in two of these studies")
    else:
        shown = (100 * profiles).round(0).astype(int).astype(str) + "%"
        print_frame(
            shown.reset_index(), "table",
            f"performance profile on {info.label}: share of studies within tau x the best",
        )  # fmt: skip
    if not axes.empty:
        importance = axes.assign(text=(100 * axes["importance"]).map("{:.0f}%".format))
        wide = importance.pivot_table(
            index=["optimizer", "axis"], columns="study", values="text", aggfunc="first",
            sort=False,
        ).reindex(columns=args.studies).fillna("-")  # fmt: skip
        print_frame(wide.reset_index(), "table", "importance of each axis (share of variance)")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    loaded = load_study(_store(args.storage), args.study, args.metric)
    cells, chance = loaded.cells, loaded.chance
    if args.kind == "lr-wd":
        if args.optimizer is None:
            names = ", ".join(dict.fromkeys(cells["optimizer"]))
            raise UserError(f"--kind lr-wd needs --optimizer NAME; this study has: {names}")
        table = lr_wd_table(cells, args.optimizer, args.metric, args.variant, chance=chance)
    elif args.kind == "lr-optimizer":
        table = lr_optimizer_table(
            cells, args.metric, args.variant, args.weight_decay, chance=chance
        )
    else:
        table = variant_optimizer_table(
            cells, args.metric, args.lr, args.weight_decay, chance=chance
        )
    rows = table_rows(table)
    if args.format == "csv":
        pd.DataFrame(rows[1:], columns=rows[0]).to_csv(sys.stdout, index=False)
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    out = Table(title=escape(table.title))
    for k, header in enumerate(rows[0]):
        out.add_column(escape(header), justify="left" if k == 0 else "right")
    for row in rows[1:]:
        out.add_row(*(escape(v) for v in row))
    console = Console(width=max(80, 12 * len(rows[0])))
    console.print(out)
    for line in table.footer:
        console.print(line, markup=False)
    return 0


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "study"


def _writable(output: str) -> Path:
    path = Path(output)
    if not path.parent.is_dir():
        raise UserError(f"cannot write {str(path)!r}: no folder {str(path.parent)!r}; create it")
    return path


def cmd_report(args: argparse.Namespace) -> int:
    from robustbench_opt.report import render_report, write_pngs
    from robustbench_opt.report.sections import report_figures

    scored = score_study(_store(args.storage), args.study, args.metric, epochs=True)
    if args.format == "png":
        folder = Path(args.output or f"{_safe_stem(args.study)}-figures")
        figures = {key: fig for key, (_, fig) in report_figures(scored).items()}
        print(f"wrote {len(write_pngs(figures, folder))} PNG files into {folder}")
        return 0
    path = _writable(args.output or f"{_safe_stem(args.study)}-report.html")
    path.write_text(render_report(scored), encoding="utf-8")
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, works offline)")
    if args.figures:
        figures = {key: fig for key, (_, fig) in report_figures(scored).items()}
        print(f"wrote {len(write_pngs(figures, args.figures))} PNG files into {args.figures}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    rows, unit = read_results_csv(args.file, args.acc_unit)
    store = _store(args.storage, create=True)
    if store.has_study(args.study):
        raise UserError(
            f"study {args.study!r} already exists in {store.display_url}; "
            "import under another --study name"
        )
    store.import_cells(
        args.study, rows, f"imported from {Path(args.file).name}", num_classes=args.classes
    )
    diverged = sum(r["diverged"] for r in rows)
    print(
        f"imported {len(rows)} trials ({diverged} diverged) into study {args.study!r}; "
        f"accuracies read as {unit}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from robustbench_opt.report.serve import serve

    return serve(args.host, args.port, _store(args.storage))
