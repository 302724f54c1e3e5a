"""A real `stillhouse serve` (BentoML's server under Stillhouse's supervisor: front + model service) on 127.0.0.1,
with TLS and tokens.

The server is killed with SIGKILL in the last test, right after an acknowledged feedback write, which must
still be in the database.
"""

import json
import signal
import sqlite3

import pytest

from stillhouse.serve.local import start_serve, stop_process_group
from stillhouse.serve.tokens import hash_token
from tests.conftest import self_signed

pytestmark = pytest.mark.integration

TOKEN = "e2e-token-of-ci"
EMAIL = "jane.doe@bank.co.uk"


@pytest.fixture(scope="module")
def server(tiny_student_tag, tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    cert, key = self_signed(folder)
    (folder / "tokens").write_text(f"ci {hash_token(TOKEN)}\n")
    process, client, port = start_serve(
        [tiny_student_tag, "--dir", str(folder / "serve"), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
         "--tokens-file", str(folder / "tokens")], folder, cert=cert)
    yield {"client": client, "process": process, "folder": folder, "port": port}
    stop_process_group(process)


def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def test_tls_serves_and_plain_http_to_the_tls_port_fails(server):
    import httpx

    response = server["client"].post("/classify", json={"texts": [f"write to {EMAIL}", "great"]}, headers=auth())
    assert response.status_code == 200 and len(response.json()["results"]) == 2
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{server['port']}/readyz", timeout=10)


def test_security_answers_over_the_real_server(server):
    client = server["client"]
    assert client.post("/classify", json={"texts": ["hi"]}).status_code == 401
    assert client.post("/classify", content=b"x" * 2_000_000, headers=auth()).status_code == 413
    too_long = client.post("/classify", json={"texts": [EMAIL * 1000]}, headers=auth())
    assert too_long.status_code == 422 and "characters; the limit is" in too_long.json()["error"]
    assert client.get("/metrics", headers=auth()).status_code == 200
    # a classifier's service has only its task's route: /rerank and /score are not there, whatever the body
    for route, body in (("/rerank", {"query": "q", "passages": ["p"]}), ("/score", b"not json")):
        kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
        assert client.post(route, headers=auth(), **kwargs).status_code == 404


def test_acknowledged_feedback_survives_sigkill_and_no_log_holds_pii_or_token(server):
    client, folder = server["client"], server["folder"]
    acked = client.post("/feedback", json={"text": f"card stolen, mail {EMAIL}", "label": "negative"},
                        headers=auth())
    assert acked.status_code == 200
    stop_process_group(server["process"], signal.SIGKILL)  # front, model service and supervisor, no clean-up
    rows = sqlite3.connect(folder / "serve" / "feedback.sqlite").execute(
        "SELECT id, text, label FROM feedback").fetchall()
    assert (acked.json()["feedback_id"], f"card stolen, mail {EMAIL}", "negative") in rows
    audit = [json.loads(line) for line in (folder / "serve" / "audit.jsonl").read_text().splitlines()]
    assert {"/classify", "/feedback", "/metrics"} <= {line["endpoint"] for line in audit}
    logs = (folder / "serve" / "audit.jsonl").read_text() + (folder / "server.log").read_text()
    assert EMAIL not in logs and TOKEN not in logs and "card stolen" not in logs


def test_a_server_that_exits_at_start_is_reported_with_its_log(tmp_path):
    with pytest.raises(RuntimeError, match="did not become ready") as failure:
        start_serve(["no-such-student:latest", "--dir", str(tmp_path / "serve"), "--no-auth"], tmp_path, timeout_s=60)
    assert "no-such-student" in str(failure.value)  # the CLI's own error, read from server.log


def test_feedback_on_postgresql_survives_sigkill_and_exports_the_latest_label(tiny_student_tag, tmp_path,
                                                                               postgres_url):
    import psycopg
    import yaml

    from stillhouse.serve.feedback import export_feedback

    (tmp_path / "tokens").write_text(f"ci {hash_token(TOKEN)}\n")
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"model": tiny_student_tag, "feedback": {"url": postgres_url}}))
    process, client, _ = start_serve(["--config", str(config), "--dir", str(tmp_path / "serve"),
                                      "--tokens-file", str(tmp_path / "tokens")], tmp_path)
    try:
        first = client.post("/feedback", json={"text": "card was stolen", "label": "positive"}, headers=auth())
        second = client.post("/feedback", json={"text": "card was stolen", "label": "negative"}, headers=auth())
        assert first.status_code == second.status_code == 200
    finally:
        stop_process_group(process, signal.SIGKILL)
    assert not (tmp_path / "serve" / "feedback.sqlite").exists()  # the URL replaced the file
    with psycopg.connect(postgres_url) as db:
        rows = db.execute("SELECT id, text, label FROM feedback ORDER BY id").fetchall()
    assert [(r[0], r[2]) for r in rows] == [(first.json()["feedback_id"], "positive"),
                                            (second.json()["feedback_id"], "negative")]
    assert export_feedback(postgres_url, tmp_path / "seed.jsonl") == 1
    (record,) = [json.loads(line) for line in (tmp_path / "seed.jsonl").read_text().splitlines()]
    assert (record["text"], record["label"]) == ("card was stolen", "negative")  # the latest correction wins


def test_an_unreachable_feedback_database_stops_serve_before_it_starts(tiny_student_tag, tmp_path):
    import yaml

    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"model": tiny_student_tag, "auth": {"enabled": False},
                                      "feedback": {"url": "postgresql://nobody@127.0.0.1:9/none"}}))
    with pytest.raises(RuntimeError, match="did not become ready") as failure:
        start_serve(["--config", str(config), "--dir", str(tmp_path / "serve")], tmp_path, timeout_s=60)
    assert "cannot connect to the feedback database" in str(failure.value)
