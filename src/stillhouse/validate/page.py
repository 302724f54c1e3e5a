"""A validation result as one self-contained HTML page: readable with no network.

GE's Data Docs load bootstrap, jQuery, bootstrap-table, font-awesome, vega and a logo from CDNs: offline (an
in-house deployment, an air-gapped review) their index is empty and the status column blank, and opening a page
sends requests outside. This page carries its own style, no script and no outside reference; every expectation
is a row with its status, what it means, how many rows failed and a few examples. The report links to it; GE's
site stays beside it for those with network access.
"""

from __future__ import annotations

import html
from pathlib import Path

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:70em;color:#1d2433}
h1{font-size:1.4em;margin-bottom:.2em} .sub{color:#5a6275;margin-top:0}
table{border-collapse:collapse;width:100%;margin-top:1em} th,td{border-bottom:1px solid #d9dde5;padding:.45em .6em;
text-align:left;vertical-align:top} th{background:#f3f5f8;font-weight:600}
.ok{color:#176b2c;font-weight:600} .fail{color:#a4161a;font-weight:600} code{font-size:.92em;color:#3b4255}
.badge{display:inline-block;padding:.15em .6em;border-radius:.8em;color:#fff}
.badge.ok{background:#2b8a3e;color:#fff} .badge.fail{background:#c92a2a;color:#fff}
"""


def _cell(value) -> str:
    return html.escape("" if value is None else str(value))


def validation_page(suite: str, success: bool, rows: int, expectations: list[dict]) -> str:
    """The page's HTML. ``expectations``: one dict per expectation with ``meaning``, ``type``, ``success``,
    ``unexpected`` (count or None), ``examples`` and ``observed`` (already shortened, as the summary shows them)."""
    failed = sum(1 for e in expectations if not e["success"])
    verdict = "passed" if success else f"failed: {failed} of {len(expectations)} expectations"
    body = []
    for e in expectations:
        status = '<span class="ok">passed</span>' if e["success"] else '<span class="fail">failed</span>'
        found = e.get("examples") or e.get("observed") or ""
        unexpected = "" if e.get("unexpected") is None else e["unexpected"]
        body.append(f"<tr><td>{status}</td><td>{_cell(e['meaning'])}</td><td><code>{_cell(e['type'])}</code></td>"
                    f"<td>{_cell(unexpected)}</td><td>{_cell(found)}</td></tr>")
    badge = "ok" if success else "fail"
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_cell(suite)} validation</title>"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<style>{_STYLE}</style></head><body>"
            f"<h1>{_cell(suite)} suite <span class=\"badge {badge}\">{_cell(verdict)}</span></h1>"
            f"<p class=\"sub\">Great Expectations, {len(expectations)} expectations over {rows} rows. The result "
            f"JSON is <code>{_cell(suite)}.json</code> beside this page.</p>"
            "<table><thead><tr><th>status</th><th>expectation</th><th>GE type</th><th>rows failing</th>"
            "<th>examples / observed</th></tr></thead><tbody>" + "".join(body) + "</tbody></table></body></html>")


def write_validation_page(path: str | Path, suite: str, success: bool, rows: int, expectations: list[dict]) -> str:
    Path(path).write_text(validation_page(suite, success, rows, expectations), encoding="utf-8")
    return str(path)
