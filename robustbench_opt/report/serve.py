"""Local web app: lists the studies with their progress and serves each one's live report.

Stdlib `http.server`; reports are regenerated on every request. Pages reload themselves only
while there is something to wait for: a report while its study has running or pending cells, the
list while some study has. Every page links back to the list. Meant for 127.0.0.1; it has no
authentication.
"""

from __future__ import annotations

import html
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

from robustbench_opt.analysis.scores import METRICS
from robustbench_opt.analysis.study import score_study
from robustbench_opt.errors import UserError
from robustbench_opt.report.html import render_report
from robustbench_opt.states import PENDING, RUNNING

INDEX_REFRESH_S = 10  # the study list reloads this often while some study is unfinished
REPORT_REFRESH_S = 30  # a report of a study with unfinished cells reloads this often
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em}td,th{border:1px solid #ccc;"
    "padding:.2em .6em}table{border-collapse:collapse}"
)
BACK = '<p><a href="/">&larr; all studies</a></p>'


def _page(title: str, body: str, refresh_seconds: int | None = None) -> str:
    """A small HTML page (the list, an error)."""
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">{refresh}'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


def index_page(store) -> str:
    """The study list with progress and a link to each report; reloads while a study has running
    or pending cells."""
    rows = []
    studies = store.list_studies()
    for s in studies:
        finished = s.done + s.diverged
        share = f"{100 * finished / s.n_cells:.0f}%" if s.n_cells else "-"
        link = f"/report?study={quote(s.name, safe='')}"
        rows.append(
            f'<tr><td><a href="{html.escape(link)}">{html.escape(s.name)}</a></td>'
            f"<td>{html.escape(s.source)}</td><td>{s.n_cells}</td><td>{share}</td>"
            f"<td>{s.done}</td><td>{s.diverged}</td><td>{s.failed}</td><td>{s.running}</td>"
            f"<td>{s.pending}</td></tr>"
        )
    body = (
        "<table><tr><th>study</th><th>source</th><th>trials</th><th>finished</th><th>done</th>"
        "<th>diverged</th><th>failed</th><th>running</th><th>pending</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No studies yet: run one with <code>robustbench-opt run</code>.</p>"
    )
    unfinished = any(s.running + s.pending for s in studies)
    return _page(
        "robustbench-opt studies",
        f"<h1>Studies</h1><p>{html.escape(store.display_url)}</p>{body}",
        INDEX_REFRESH_S if unfinished else None,
    )


def report_page(store, study: str, metric: str) -> str:
    """The study's report, regenerated now; reloads while cells are running or pending."""
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    scored = score_study(store, study, metric, epochs=True)
    unfinished = scored.cells["state"].isin((RUNNING, PENDING)).any()
    return render_report(scored, refresh_seconds=REPORT_REFRESH_S if unfinished else None, back="/")


def make_server(host: str, port: int, store) -> ThreadingHTTPServer:
    """An HTTP server bound to (host, port) serving `store`'s studies."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path == "/":
                    self._send(HTTPStatus.OK, index_page(store))
                elif url.path == "/report" and "study" in query:
                    metric = query.get("metric", ["final"])[0]
                    self._send(HTTPStatus.OK, report_page(store, query["study"][0], metric))
                else:
                    self._send(HTTPStatus.NOT_FOUND, _page("not found", BACK + "<p>not found</p>"))
            except UserError as err:
                page = _page("error", f"{BACK}<p>error: {html.escape(str(err))}</p>")
                self._send(HTTPStatus.NOT_FOUND, page)

        def _send(self, status: HTTPStatus, page: str) -> None:
            data = page.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    try:
        return ThreadingHTTPServer((host, port), Handler)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pick --port") from None


def serve(host: str, port: int, store) -> int:
    """Serves until Ctrl-C."""
    server = make_server(host, port, store)
    print(f"serving {store.display_url} on http://{host}:{server.server_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
