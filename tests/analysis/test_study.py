"""The study-level service: one loader of a study's cells and one scorer, on a real database."""

from __future__ import annotations

import pandas as pd
import pytest

from robustbench_opt.analysis.results_csv import paper_table_path, read_results_csv
from robustbench_opt.analysis.scores import compute_scores
from robustbench_opt.analysis.study import load_study, score_study
from robustbench_opt.analysis.uncertainty import bootstrap, intervals
from robustbench_opt.errors import UserError
from robustbench_opt.storage import Store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """Table 3 imported as measured on 100 classes, and a registered study with no cells."""
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('study') / 's.db'}")
    rows, _ = read_results_csv(paper_table_path("paper_table3"))
    store.import_cells("table3", rows, "paper", num_classes=100)
    store.register_study("empty", {"name": "empty"}, "hash-empty", [])
    yield store
    store.close()


def test_load_study_reads_the_cells_the_chance_and_epochs_only_when_asked(store):
    loaded = load_study(store, "table3")
    pd.testing.assert_frame_equal(loaded.cells, store.cells_frame("table3"))
    assert loaded.name == "table3" and loaded.chance == 0.01  # import --classes 100
    assert loaded.epochs is None
    with_epochs = load_study(store, "table3", "final", epochs=True)
    pd.testing.assert_frame_equal(with_epochs.epochs, store.epochs_frame("table3"))


@pytest.mark.parametrize(
    ("study", "metric", "message"),
    [
        ("tabel3", None, "unknown study 'tabel3'; did you mean 'table3'?"),
        ("empty", None, "study 'empty' has no cells yet; run it or import results first"),
        ("empty", "final", "study 'empty' has no cells yet; run it or import results first"),
        ("table3", "val", "study 'table3' has no validation results"),
    ],
)
def test_what_cannot_be_loaded_is_a_one_line_error(store, study, metric, message):
    with pytest.raises(UserError) as info:
        load_study(store, study, metric)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    with pytest.raises(UserError) as scored:
        score_study(store, study, metric or "final")
    assert str(scored.value) == str(info.value)


def test_score_study_scores_and_bootstraps_the_loaded_cells_with_its_choices(store):
    scored = score_study(store, "table3", "final", level=0.9, resamples=50, seed=3, epochs=True)
    cells = store.cells_frame("table3")
    pd.testing.assert_frame_equal(scored.scores, compute_scores(cells, "final", chance=0.01))
    boots = bootstrap(cells, "final", chance=0.01, resamples=50, seed=3)
    pd.testing.assert_frame_equal(scored.intervals, intervals(boots, 0.9))
    choices = (scored.metric, scored.level, scored.resamples, scored.chance)
    assert choices == ("final", 0.9, 50, 0.01)
    assert scored.epochs is not None
    assert score_study(store, "table3").epochs is None
