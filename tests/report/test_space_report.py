"""The report of a search-space study and of a multi-workload study: each figure's data checked
against the analysis, on studies stored through the spec, the planner and the storage code."""

from __future__ import annotations

import dataclasses
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustbench_opt.analysis.axes import strata
from robustbench_opt.analysis.scores import cell_means
from robustbench_opt.analysis.study import score_study
from robustbench_opt.analysis.tables import format_hparam
from robustbench_opt.report import render_report
from robustbench_opt.report.figures import BELOW_Z, SPAN
from robustbench_opt.report.sections import report_figures
from robustbench_opt.report.space_figures import (
    best_so_far,
    isolation_envelope,
    ranked_pairs,
    space_points,
)
from robustbench_opt.runner import make_plan
from robustbench_opt.spec import load_study, spec_hash
from robustbench_opt.storage import Store

from .conftest import _result

SOBOL = """\
name: sobol
dataset: digits
model: simple_cnn
recipe: {epochs: 2, batch_size: 64}
space:
  design: sobol
  points: 16
  seed: 3
  axes:
    lr: {log_range: [1.0e-4, 1.0e-1]}
    weight_decay: {log_range: [1.0e-6, 1.0e-2]}
optimizers:
  - name: adam
    space:
      beta1: {one_minus_log_range: [0.5, 0.99]}
  - name: momentum
    space:
      momentum: {one_minus_log_range: [0.5, 0.99]}
seeds: [0]
resources: {cpus: 1, gpus: 0}
"""
GRID = """\
name: betas
dataset: digits
model: simple_cnn
recipe: {epochs: 2, batch_size: 64}
space:
  design: grid
  axes:
    lr: [0.01, 0.001]
    beta1: [0.8, 0.9, 0.95]
    beta2: [0.99, 0.999]
optimizers: [adam, adamw]
seeds: [0, 1]
resources: {cpus: 1, gpus: 0}
"""
WORKLOADS = """\
name: multi
recipe: {epochs: 2, batch_size: 64}
workloads:
  - {name: small, dataset: digits, model: simple_cnn}
  - {name: other, dataset: digits, model: resnet20}
optimizers: [adam, sgd]
lrs: [0.1, 0.01]
weight_decays: [0.0]
resources: {cpus: 1, gpus: 0}
"""


def accuracy(config) -> float:
    """A deterministic accuracy with its best at lr 1e-2 and beta1 (or momentum) 0.9; small
    terms from the other axes; the multi-workload study: sgd at adam / 1.6 on `other`."""
    axes = config.axes or {"lr": config.lr}
    acc = 0.95 - 0.1 * abs(math.log10(axes["lr"]) + 2)
    for name in ("beta1", "momentum"):
        if name in axes:
            acc -= 0.2 * abs(math.log10(1 - axes[name]) + 1)
    acc -= 0.02 * abs(math.log10(axes.get("beta2", 0.999)) * 100)
    if config.workload == "other" and (config.label or config.optimizer) == "sgd":
        acc /= 1.6
    return float(np.clip(acc, 0.12, 0.99))


def stored(tmp_path: Path, text: str, name: str, diverged: int | None = None) -> Store:
    """`text`'s study registered as the runner registers it, every cell recorded with
    `accuracy` (cell number `diverged` diverged without a measurement)."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    store = Store(f"sqlite:///{tmp_path / name}.db")
    spec = load_study(path)
    plan = make_plan(None, spec, name, cpus=lambda: 2.0)
    store.register_study(name, plan.spec, spec_hash(plan.spec), plan.cells)
    run_id = store.start_run(name)
    ids = [c.cell_id(name) for c in plan.cells]
    store.claim(name, run_id, ids)
    for k, (config, cell_id) in enumerate(zip(plan.cells, ids, strict=True)):
        result = _result(config, accuracy(config) + 0.1 / 2, diverged=k == diverged)
        if k == diverged:
            result = dataclasses.replace(result, final_test_acc=math.nan, best_test_acc=math.nan)
        for epoch in result.epochs:
            store.record_epoch(name, cell_id, epoch)
        store.record_result(name, cell_id, result)
    return store


@pytest.fixture(scope="module")
def sobol_store(tmp_path_factory) -> Store:
    return stored(tmp_path_factory.mktemp("sobol"), SOBOL, "sobol", diverged=3)


@pytest.fixture(scope="module")
def sobol(sobol_store):
    return score_study(sobol_store, "sobol", resamples=200, epochs=True)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    store = stored(tmp_path_factory.mktemp("grid"), GRID, "betas")
    return score_study(store, "betas", resamples=200, epochs=True)


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    store = stored(tmp_path_factory.mktemp("multi"), WORKLOADS, "multi")
    return score_study(store, "multi", resamples=200, epochs=True)


def test_the_pairs_are_listed_most_important_first_and_each_has_a_figure(sobol, grid):
    points = space_points(sobol)
    pairs = ranked_pairs(sobol, points)
    # lr and beta1/momentum carry the accuracy; weight decay nothing
    assert pairs[0] == ("lr", "weight_decay")  # every entry has both: lr counts twice
    assert set(pairs[1:3]) == {("lr", "beta1"), ("lr", "momentum")}
    assert set(pairs) == {("lr", "beta1"), ("lr", "weight_decay"), ("lr", "momentum"),
                          ("weight_decay", "beta1"), ("weight_decay", "momentum")}  # fmt: skip
    figures = report_figures(sobol)
    assert [k for k in figures if k.startswith("pair-")] == [f"pair-{x}__{y}" for x, y in pairs]
    assert list(report_figures(grid))[0] == "pair-lr__beta1"


def test_a_grid_pair_heatmap_is_each_cells_best_over_the_other_axes(grid):
    fig = report_figures(grid)["pair-beta1__beta2"][1]
    means = cell_means(grid.cells, "final", chance=grid.chance)
    best = means["acc"].max()
    for trace, optimizer in zip(fig.data, ["adam", "adamw"], strict=True):
        mine = means[means["optimizer"] == optimizer]
        frame = pd.DataFrame(list(mine["axes"])).assign(acc=mine["acc"].to_numpy())
        expected = frame.pivot_table(index="beta2", columns="beta1", values="acc", aggfunc="max")
        gap = 100 * (best - expected.to_numpy())
        np.testing.assert_allclose(np.asarray(trace.z, float), np.where(gap > SPAN, BELOW_Z, gap))
        assert list(trace.x) == [format_hparam(v) for v in (0.8, 0.9, 0.95)]
        assert list(trace.y) == [format_hparam(v) for v in (0.99, 0.999)]
        assert trace.text[0][0] == f"{100 * expected.iloc[0, 0]:.2f}"
    assert "best over the other axes" in fig.layout.title.text


def test_a_sampled_pair_draws_every_point_on_its_axes_scales(sobol):
    fig = report_figures(sobol)["pair-lr__beta1"][1]
    [trace] = fig.data  # only adam has beta1
    points = space_points(sobol)[("adam", "default")][1]
    np.testing.assert_allclose(trace.x, points["lr"])
    np.testing.assert_allclose(trace.y, 1 - points["beta1"])  # one_minus_log: 1 - beta1
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert fig.layout.yaxis.title.text == "1 - beta1"
    gap = 100 * (max(p["acc"].max() for _, p in space_points(sobol).values()) - points["acc"])
    np.testing.assert_allclose(trace.marker.color, np.where(gap > SPAN, BELOW_Z, gap))
    assert "every sampled point" in fig.layout.title.text


def test_isolation_plots_draw_every_point_and_each_strata_best(sobol):
    fig = report_figures(sobol)["isolation"][1]
    axes, points = space_points(sobol)[("momentum", "default")]
    momentum = next(a for a in axes if a.name == "momentum")
    dots, line = [t for t in fig.data if t.xaxis == "x4"]  # lr, weight_decay, beta1, momentum
    measured = points[points["acc"].notna()]
    np.testing.assert_allclose(dots.x, 1 - measured["momentum"])
    np.testing.assert_allclose(dots.y, 100 * measured["acc"])
    bins = strata(measured, momentum, grid=False)
    np.testing.assert_allclose(sorted(line.y), sorted(100 * measured.groupby(bins)["acc"].max()))
    envelope = isolation_envelope(points, momentum, grid=False)
    np.testing.assert_allclose(line.x, 1 - envelope["momentum"])
    assert fig.layout.xaxis4.type == "log" and fig.layout.xaxis4.title.text == "1 - momentum"


def test_budget_draws_e_best_of_k_with_its_band_and_the_best_so_far_in_sampling_order(sobol):
    fig = report_figures(sobol)["expected_best"][1]
    adam = sobol.budget[sobol.budget["optimizer"] == "adam"]
    band, curve, seen = [t for t in fig.data if t.legendgroup == "adam"]
    np.testing.assert_allclose(curve.y, 100 * adam["expected_best"])
    np.testing.assert_allclose(band.y, [*100 * adam["high"], *100 * adam["low"][::-1]])
    points = space_points(sobol)[("adam", "default")][1]
    assert list(points["point"]) == list(range(16))  # sampling order
    np.testing.assert_allclose(seen.y, 100 * np.maximum.accumulate(points["acc"]))
    assert list(best_so_far(points)["best"]) == list(np.maximum.accumulate(points["acc"]))
    assert seen.line.shape == "hv"


def test_the_cross_workload_profile_and_tables_follow_the_aggregate(multi):
    cross = multi.cross
    assert cross.ranks.loc["sgd", "other"] == 2.0 and cross.ranks.loc["sgd", "small"] == 1.5
    fig = report_figures(multi)["profiles"][1]
    for trace in fig.data:
        np.testing.assert_allclose(trace.y, 100 * cross.profiles.loc[trace.name])
        assert trace.line.shape == "hv"  # a step function of tau, as AlgoPerf draws it
    adam, sgd = (next(t for t in fig.data if t.name == n) for n in ("adam", "sgd"))
    assert list(adam.y) == [100.0] * len(adam.y)  # adam is the best on both workloads
    # sgd ties adam on `small` and has its mean / 1.6 on `other`
    assert list(sgd.y) == [50.0 if tau < 1.6 else 100.0 for tau in adam.x]
    assert fig.layout.yaxis.title.text.startswith("workloads within")
    page = render_report(multi)
    assert "<h2>Across workloads</h2>" in page and f"W = {cross.kendall_w:.2f}" in page
    assert html.escape(cross.verdict[0]) in page and "Transfer: one hyperparameter point" in page
    heatmaps = report_figures(multi)["heatmaps"][1]
    titles = {a.text for a in heatmaps.layout.annotations}
    assert {"adam / small", "adam / other", "sgd / small", "sgd / other"} <= titles


def test_the_space_page_has_its_tables_and_a_picker_for_every_pair(sobol):
    page = render_report(sobol)
    assert "What each axis costs" in page and "E[best of k]" in page
    assert page.count("<option ") == len(ranked_pairs(sobol, space_points(sobol)))
    assert "</script" not in page.split('id="pair-figures">')[1].split("</script>")[0][:-1]


PICK = """new Promise(done => {
  const div = document.getElementById('fig-pair');
  const before = [div.layout.title.text, div.querySelector('.xtitle').textContent];
  const picker = document.getElementById('pair-picker');
  picker.value = picker.options[%d].value;
  picker.dispatchEvent(new Event('change'));
  const t0 = Date.now(); (function poll() {
    const after = [div.layout.title.text, div.querySelector('.xtitle').textContent,
                   div.querySelector('.ytitle').textContent, div.data.length];
    if (after[0] !== before[0] || Date.now() - t0 > 10000) done({before, after});
    else setTimeout(poll, 100); })(); })"""
INJECT = """new Promise(done => {
  const img = document.createElement('img'); img.onerror = () => done('refused');
  img.onload = () => done('loaded'); img.src = 'http://203.0.113.9/x.png';
  document.body.appendChild(img); setTimeout(() => done('timeout'), 5000); })"""


@pytest.mark.slow
def test_chromium_switches_the_pair_in_the_page_and_the_csp_holds(devtools, sobol, tmp_path):
    from .test_report import evaluate, open_page, remote, requested_urls

    path = tmp_path / "space.html"
    path.write_text(render_report(sobol), encoding="utf-8")
    session = open_page(devtools, path)
    pairs = ranked_pairs(sobol, space_points(sobol))
    shown = evaluate(devtools, session, PICK % 1)  # the second pair in the list
    title, x_title = shown["before"]
    assert f"over {pairs[0][0]} x {pairs[0][1]}" in title and x_title == pairs[0][0]
    title, x_title, y_title, traces = shown["after"]
    assert f"over {pairs[1][0]} x {pairs[1][1]}" in title
    assert (x_title, y_title) == tuple(
        f"1 - {n}" if n in ("beta1", "momentum") else n for n in pairs[1]
    )
    expected = report_figures(sobol)[f"pair-{pairs[1][0]}__{pairs[1][1]}"][1]
    assert traces == len(expected.data)
    assert remote(requested_urls(devtools)) == []  # the page itself loads nothing
    # An image injected into the page is refused by its CSP, with the test's blocklist lifted
    devtools.send("Network.setBlockedURLs", {"urls": []}, session)
    assert evaluate(devtools, session, INJECT) == "refused"
    failed = [e["params"] for e in devtools.events if e.get("method") == "Network.loadingFailed"]
    assert [f.get("blockedReason") for f in failed] == ["csp"]


@pytest.mark.slow
def test_report_format_png_writes_the_space_figures(
    sobol_store, sobol, tmp_path, monkeypatch, chromium, capsys
):
    from robustbench_opt.cli import main

    monkeypatch.setenv("BROWSER_PATH", chromium)
    url = str(sobol_store.display_url)
    assert main(["report", "sobol", "--format", "png", "-o", str(tmp_path), "--storage", url]) == 0
    pairs = ranked_pairs(sobol, space_points(sobol))
    names = {f"pair-{x}__{y}.png" for x, y in pairs}
    names |= {"isolation.png", "learning_curves.png", "expected_best.png"}
    assert {p.name for p in tmp_path.iterdir()} == names
    assert f"wrote {len(names)} PNG files" in capsys.readouterr().out


def test_each_workloads_edge_warnings_name_their_workload(tmp_path):
    """Every entry's best lr is 0.01, the bottom of [1, 0.1, 0.01]: each workload warns, under
    its name."""
    text = WORKLOADS.replace("lrs: [0.1, 0.01]", "lrs: [1.0, 0.1, 0.01]")
    scored = score_study(stored(tmp_path, text, "edges"), "edges", resamples=50)
    assert sorted(w.split(": ")[0] for w in scored.edge_warnings) == ["other"] * 2 + ["small"] * 2
    assert all("lr = 0.01, at the bottom of the range" in w for w in scored.edge_warnings)


def test_scores_exports_the_cross_workload_aggregate_and_refuses_it_for_one_workload(
    tmp_path, capsys
):
    """`scores --part workloads`: one row per optimizer with its ranks, profile, transfer and W,
    equal to the aggregate; a one-workload study gets a one-line error, exit 2."""
    from robustbench_opt.analysis.workloads import cross_frame
    from robustbench_opt.cli import main

    stored(tmp_path, WORKLOADS, "multi")
    url = f"sqlite:///{tmp_path / 'multi'}.db"
    assert (
        main(["scores", "multi", "--storage", url, "--format", "json", "--part", "workloads"]) == 0
    )
    rows = {row["optimizer"]: row for row in json.loads(capsys.readouterr().out)}
    cross = score_study(Store(url), "multi").cross
    assert cross_frame(cross)["optimizer"].tolist() == list(rows)
    for optimizer, row in rows.items():
        assert (row["rank_small"], row["rank_other"]) == tuple(cross.ranks.loc[optimizer])
        assert row["profile_tau_1.5"] == cross.profiles.loc[optimizer, "tau 1.5"]
        assert row["kendall_w"] == pytest.approx(cross.kendall_w)
    assert rows["sgd"]["profile_tau_1.5"] == 0.5 and rows["adam"]["profile_tau_1"] == 1.0
    stored(tmp_path, SOBOL, "one")
    args = ["scores", "one", "--storage", f"sqlite:///{tmp_path / 'one'}.db", "--part", "workloads"]
    assert main([*args, "--format", "csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has one workload" in err[0] and "choices: scores, axes" in err[0]
