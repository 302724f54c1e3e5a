"""2. The audit log can be neither flooded nor skipped.

Before: the request path was written verbatim into the audit line (also for 401s), so anonymous clients with
long URLs wrote tens of MB per second; and when the line could not be written, the request was still answered
(and feedback committed) with no audit line. Now the endpoint is a route name or `unknown`, and a request whose
line cannot be written is refused with 503 before anything is served.
"""

import json
import sqlite3

import pytest

from tests.security.conftest import audit_lines, bearer, logs_of

pytestmark = [pytest.mark.integration, pytest.mark.security]


def test_long_urls_leave_one_short_line_each_without_the_path(asgi):
    client, folder = asgi()
    path = "/" + "flood-" * 2000
    for headers in ({}, bearer()):  # anonymous (401) and authenticated (404)
        assert client.get(path, headers=headers).status_code in (401, 404)
    lines = (folder / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 2 and all(len(line) < 600 for line in lines)
    assert [json.loads(line)["endpoint"] for line in lines] == ["unknown", "unknown"]
    assert "flood-" not in "".join(lines)


def test_long_urls_do_not_reach_the_server_log(live):
    before = live["log"].stat().st_size
    for _ in range(20):
        live["client"].get("/" + "flood-" * 1000)
    assert "flood-" not in logs_of(live)
    assert live["log"].stat().st_size - before < 20 * 200  # no access-log line quoting 6 KB each


def unwritable(folder):
    """An audit path that no process can open for writing (a folder where the file should be), even as root."""
    path = folder / "audit-unwritable"
    path.mkdir()
    return str(path)


def test_an_unwritable_audit_log_refuses_with_503_and_commits_nothing(asgi, tmp_path):
    client, folder = asgi(audit={"path": unwritable(tmp_path)})
    classify = client.post("/classify", json={"texts": ["great"]}, headers=bearer())
    assert classify.status_code == 503 and "results" not in classify.json()
    assert "audit log" in classify.json()["error"]
    feedback = client.post("/feedback", json={"text": "lost card", "label": "negative"}, headers=bearer())
    assert feedback.status_code == 503 and "feedback_id" not in feedback.json()
    assert sqlite3.connect(folder / "fb.sqlite").execute("SELECT COUNT(*) FROM feedback").fetchone() == (0,)
    anonymous = client.post("/classify", json={"texts": ["great"]})
    assert anonymous.status_code == 503  # no answer at all, not even a 401, without an audit line
    # before, probes (which are not audited) kept answering 200, so an orchestrator kept routing every request
    # to a worker that refused them all; liveness stays: restarting the process fixes no disk
    assert client.get("/readyz").status_code == 503 and client.get("/livez").status_code == 200


def test_readiness_follows_the_audit_log_down_and_back_up(asgi, tmp_path):
    audit = tmp_path / "audit" / "audit.jsonl"
    client, _ = asgi(audit={"path": str(audit)})
    assert client.get("/readyz").status_code == 200
    audit.unlink(missing_ok=True)
    audit.mkdir()  # the log cannot be opened for writing, even by root
    assert client.post("/classify", json={"texts": ["great"]}, headers=bearer()).status_code == 503
    assert client.get("/readyz").status_code == 503
    audit.rmdir()  # the operator fixed it: ready again, and the audit log says when it recovered
    assert client.get("/readyz").status_code == 200
    assert [line["reason"] for line in audit_lines(audit)] == ["audit_recovered"]
    assert client.post("/classify", json={"texts": ["great"]}, headers=bearer()).status_code == 200


def test_a_failing_audit_write_turns_the_answer_into_503(asgi, monkeypatch):
    # /dev/full opens but every write fails with ENOSPC: the line is written before the answer, so no answer
    monkeypatch.setenv("STILLHOUSE_AUDIT_KEY", "k" * 32)
    client, _ = asgi(audit={"path": "/dev/full"})
    assert client.get("/readyz").status_code == 200  # it opens: nothing has failed yet
    response = client.post("/classify", json={"texts": ["great"]}, headers=bearer())
    assert response.status_code == 503 and "results" not in response.json()
    assert client.get("/readyz").status_code == 503  # a line failed: not ready until one can be written again


def test_every_refusal_and_answer_has_its_line_before_the_client_sees_it(asgi):
    client, folder = asgi()
    statuses = []
    for kwargs in ({"json": {"texts": ["ok"]}, "headers": bearer()}, {"json": {"texts": ["ok"]}},
                   {"json": {"texts": 5}, "headers": bearer()}, {"content": b"x", "headers": bearer()}):
        response = client.post("/classify", **kwargs)
        statuses.append(response.status_code)
        # the line is on disk by the time the response has arrived
        assert audit_lines(folder / "audit.jsonl")[-1]["request_id"] == response.headers["x-request-id"]
    assert statuses == [200, 401, 422, 415]
