"""The local web app: study list with progress, live reports, escaped names."""

from __future__ import annotations

import html
import threading
import urllib.error
import urllib.request
from urllib.parse import quote

import pytest

from robustbench_opt.serve import make_server
from robustbench_opt.storage import Store


@pytest.fixture(scope="module")
def base_url(report_db):
    server = make_server("127.0.0.1", 0, Store(report_db))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


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
    assert 'http-equiv="refresh"' in page


def test_report_is_regenerated_and_reloads_while_cells_are_unfinished(base_url, evil):
    status, page = get(base_url + "/report?study=demo")
    assert status == 200
    assert "<h1>Study demo</h1>" in page and 'content="30"' in page
    status, page = get(f"{base_url}/report?study={quote(evil, safe='')}")
    assert status == 200 and evil not in page


def test_unknown_study_and_paths_are_404_with_escaped_text(base_url):
    status, page = get(base_url + "/report?study=" + quote("<b>dem</b>"))
    assert status == 404
    assert "unknown study &#x27;&lt;b&gt;dem&lt;/b&gt;&#x27;" in page and "<b>dem" not in page
    assert get(base_url + "/nothing")[0] == 404
