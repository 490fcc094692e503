"""Search spaces through the real runner and storage: a Sobol study on SQLite and PostgreSQL,
points that grow, Optuna's view of the axes (through optuna-dashboard's own API), and a
database stored before spaces existed."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from robustbench_opt.analysis.study import score_study
from robustbench_opt.errors import UserError
from robustbench_opt.runner import make_plan
from robustbench_opt.runner.execute import run_plan
from robustbench_opt.spec import load_study
from robustbench_opt.storage import Store

pytestmark = pytest.mark.usefixtures("ray_local")
STORED = Path(__file__).parent / "studies" / "quickstart-v0.db"
SOBOL = """\
name: sobol
dataset: digits
model: simple_cnn
recipe: {epochs: 2, batch_size: 64}
space:
  design: sobol
  points: 4
  seed: 1
  axes:
    lr: {log_range: [1.0e-3, 1.0e-1]}
optimizers:
  - name: momentum
    space:
      momentum: {one_minus_log_range: [0.5, 0.99]}
  - name: adam
    space:
      beta1: {one_minus_log_range: [0.8, 0.99]}
      label_smoothing: {choices: [0.0, 0.1]}
seeds: [0, 1]
resources: {cpus: 1, gpus: 0, packing: 2}
"""


def study_file(tmp_path: Path, points: int = 4, design: str = "sobol") -> Path:
    path = tmp_path / "sobol.yaml"
    text = textwrap.dedent(SOBOL).replace("points: 4", f"points: {points}")
    path.write_text(text.replace("design: sobol", f"design: {design}"))
    return path


def complete(store: Store, study: str) -> Counter:
    trials = optuna.load_study(study_name=study, storage=store.optuna_storage).trials
    return Counter(t.user_attrs["cell_id"] for t in trials if t.state == TrialState.COMPLETE)


def test_a_sobol_study_runs_every_point_once_and_grows_by_its_new_points_only(
    storage_url: str, tmp_path: Path, fake_trial
) -> None:
    store = Store(storage_url)
    spec = load_study(study_file(tmp_path))
    plan = make_plan(store, spec, "sobol")
    assert len(plan.to_run) == 2 * 4 * 2  # optimizers x points x seeds
    outcome = run_plan(store, spec, plan, trial_fn=fake_trial())
    assert outcome.failed == {}
    first = {c.cell_id("sobol") for c in plan.cells}
    assert complete(store, "sobol") == Counter(first)  # every cell exactly once
    frame = store.cells_frame("sobol")
    assert sorted(set(frame["point"])) == [0, 1, 2, 3]
    adam = frame[frame["optimizer"] == "adam"].iloc[0]["axes"]
    assert set(adam) == {"lr", "beta1", "label_smoothing"}  # its axes, as written once

    grown = load_study(study_file(tmp_path, points=8))
    plan = make_plan(store, grown, "sobol")
    assert plan.grown and {c.point for c in plan.to_run} == {4, 5, 6, 7}
    assert first <= {c.cell_id("sobol") for c in plan.cells}  # the first points are kept
    run_plan(store, grown, plan, trial_fn=fake_trial())
    assert complete(store, "sobol") == Counter({c.cell_id("sobol") for c in plan.cells})
    assert make_plan(store, grown, "sobol").to_run == []
    assert store.study_record("sobol").spec["space"]["points"] == 8

    with pytest.raises(UserError, match="points can grow, not shrink"):
        make_plan(store, load_study(study_file(tmp_path, points=4)), "sobol")
    with pytest.raises(UserError, match="was run from a different study file.*design"):
        make_plan(store, load_study(study_file(tmp_path, design="random")), "sobol")

    scored = score_study(store, "sobol")
    assert set(scored.axes["axis"]) == {"lr", "momentum", "beta1", "label_smoothing"}
    assert scored.importance_method.startswith("fANOVA")
    assert set(scored.budget.groupby("optimizer")["k"].max()) == {8}
    store.close()


def test_optuna_and_optuna_dashboard_see_each_axis_with_its_distribution(
    tmp_path: Path, fake_trial
) -> None:
    from optuna_dashboard import wsgi

    url = f"sqlite:///{tmp_path / 'd.db'}"
    store = Store(url)
    spec = load_study(study_file(tmp_path))
    run_plan(store, spec, make_plan(store, spec, "sobol"), trial_fn=fake_trial())
    trial = next(
        t
        for t in optuna.load_study(study_name="sobol", storage=store.optuna_storage).trials
        if t.params["optimizer"] == "adam"
    )
    assert trial.distributions["lr"] == FloatDistribution(1e-3, 1e-1, log=True)
    assert trial.distributions["beta1"] == FloatDistribution(0.8, 0.99)
    assert trial.distributions["label_smoothing"] == CategoricalDistribution([0.0, 0.1])
    assert 1e-3 <= trial.params["lr"] <= 1e-1 and "momentum" not in trial.params

    app = wsgi(store.optuna_storage)
    study_id = store.optuna_storage.get_study_id_from_name("sobol")
    body = _get(app, f"/api/studies/{study_id}")
    space = {p["name"]: p["distribution"] for p in body["union_search_space"]}
    assert space["lr"]["type"] == "FloatDistribution" and space["lr"]["log"] is True
    assert space["label_smoothing"]["type"] == "CategoricalDistribution"
    assert {"momentum", "beta1"} <= set(space)
    store.close()


def _get(app, path: str) -> dict:
    """One GET through the WSGI app, as optuna-dashboard's page asks it."""
    from wsgiref.util import setup_testing_defaults

    environ = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status: list[str] = []
    chunks = app(environ, lambda s, headers, *_: status.append(s))
    assert status[0].startswith("200"), status
    return json.loads(b"".join(chunks))


def test_a_database_stored_before_spaces_resumes_with_nothing_to_run(tmp_path: Path) -> None:
    """tests/studies/quickstart-v0.db was written by the code of commit 7198810 (before search
    spaces, the trial engine and the dataset registry): studies/quickstart.yaml registered and
    every cell recorded. The study file of today plans exactly its cells, nothing to run."""
    db = tmp_path / "v0.db"
    shutil.copy(STORED, db)
    store = Store(f"sqlite:///{db}")
    plan = make_plan(store, load_study("studies/quickstart.yaml"), "quickstart")
    assert len(plan.cells) == 30 and plan.to_run == [] and not plan.grown
    assert set(plan.states.values()) == {"done"}
    assert {c.cell_id("quickstart") for c in plan.cells} == set(plan.states)
    scored = score_study(store, "quickstart")  # no point rows: lr x wd, as it was
    assert set(scored.axes["axis"]) == {"lr", "weight_decay"}
    assert scored.scores["lr_sensitivity"].notna().all()
    store.close()


WORKLOADS = """\
name: multi
recipe: {epochs: 2, batch_size: 64}
workloads:
  - {name: small, dataset: digits, model: simple_cnn}
  - {name: deep, dataset: digits, model: resnet20, recipe: {epochs: 1}}
optimizers: [adam, sgd]
lrs: [0.1, 0.01]
weight_decays: [0.0]
resources: {cpus: 1, gpus: 0}
"""


def test_a_multi_workload_study_runs_once_resumes_with_nothing_and_scores_per_workload(
    tmp_path: Path, fake_trial
) -> None:
    path = tmp_path / "multi.yaml"
    path.write_text(WORKLOADS)
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    spec = load_study(path)
    plan = make_plan(store, spec, "multi")
    assert len(plan.to_run) == 2 * 2 * 2  # workloads x optimizers x lrs
    assert {(c.workload, c.model, c.recipe.epochs) for c in plan.cells} == {
        ("small", "simple_cnn", 2),
        ("deep", "resnet20", 1),
    }
    run_plan(store, spec, plan, trial_fn=fake_trial())
    assert complete(store, "multi") == Counter(c.cell_id("multi") for c in plan.cells)
    again = make_plan(store, load_study(path), "multi")
    assert again.to_run == [] and set(again.states.values()) == {"done"}
    scored = score_study(store, "multi")
    assert [part.name for part in scored.workloads] == ["small", "deep"]
    assert set(scored.scores["variant"]) == {"small", "deep"}  # entries per workload
    assert scored.cross is not None and list(scored.cross.ranks.columns) == ["small", "deep"]
    assert scored.cross.verdict[0].endswith(f"(Kendall's W = {scored.cross.kendall_w:.2f}).")
    store.close()
