"""The local web app: study list with progress, live reports, escaped names, reloads only while
something runs, and a way back to the list from every page."""

from __future__ import annotations

import html
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

from robustbench_opt.report.serve import make_server
from robustbench_opt.storage import Store

BACK = '<a href="/">&larr; all studies</a>'
REFRESH = 'http-equiv="refresh"'


@contextmanager
def serving(url: str) -> Iterator[str]:
    """The base URL of a server on a free port over the database at `url`."""
    server = make_server("127.0.0.1", 0, Store(url))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def base_url(report_db):
    with serving(report_db) as url:
        yield url


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_index_lists_studies_with_progress_and_escaped_links(base_url, evil):
    status, page = get(base_url + "/")
    assert status == 200
    assert '<a href="/report?study=demo">demo</a>' in page
    assert "<td>16</td><td>81%</td>" in page  # 13 of 16 trials finished
    assert evil not in page and html.escape(evil) in page
    assert html.escape(f"/report?study={quote(evil, safe='')}") in page
    assert f'{REFRESH} content="10"' in page  # "demo" has running and pending cells


def test_report_is_regenerated_and_reloads_while_cells_are_unfinished(base_url, evil):
    status, page = get(base_url + "/report?study=demo")
    assert status == 200
    assert "<h1>Study demo</h1>" in page and f'{REFRESH} content="30"' in page
    assert BACK in page
    status, page = get(f"{base_url}/report?study={quote(evil, safe='')}")
    assert status == 200 and evil not in page


def test_a_finished_study_does_not_reload_and_links_back(base_url):
    status, page = get(base_url + "/report?study=done")
    assert status == 200 and "<h1>Study done</h1>" in page
    assert "16 trials" not in page and "12 trials: 11 done, 1 diverged" in page
    assert REFRESH not in page
    assert page.index(BACK) < page.index("<h1>")  # the way back comes first


def test_the_list_reloads_only_while_some_study_is_unfinished(finished_db):
    with serving(finished_db) as url:
        status, page = get(url + "/")
    assert status == 200 and '<a href="/report?study=done">done</a>' in page
    assert REFRESH not in page


def test_unknown_study_and_paths_are_404_with_escaped_text(base_url):
    status, page = get(base_url + "/report?study=" + quote("<b>dem</b>"))
    assert status == 404
    assert "unknown study &#x27;&lt;b&gt;dem&lt;/b&gt;&#x27;" in page and "<b>dem" not in page
    assert BACK in page and REFRESH not in page
    status, page = get(base_url + "/nothing")
    assert status == 404 and BACK in page
