"""A chain of two students behind a real `stillhouse serve --chain` (each step its own BentoML service process)."""

import json

import pytest

from stillhouse.serve.local import start_serve, stop_process_group
from stillhouse.serve.tokens import hash_token
from tests.conftest import make_rows, package_tiny_student

pytestmark = pytest.mark.integration

TOKEN = "chain-test-token"
TEXTS = [text for text, _ in make_rows(10)]  # the tiny student labels these both ways


@pytest.fixture(scope="module")
def chain_client(tiny_student_tag, tiny_model_dir, tmp_path_factory):
    urgency = package_tiny_student("tiny-urgency", ["low", "high"], tiny_model_dir, seed=1)
    folder = tmp_path_factory.mktemp("chain")
    (folder / "chain.yaml").write_text(json.dumps({"name": "triage", "steps": [
        {"name": "sentiment", "model": tiny_student_tag},
        {"name": "urgency", "model": urgency, "when": {"step": "sentiment", "labels": ["negative"]}}]}))
    (folder / "serve.yaml").write_text(json.dumps({"limits": {"max_texts": 32}}))
    process, client, _ = start_serve(["--chain", str(folder / "chain.yaml"), "--config", str(folder / "serve.yaml"),
                                       "--dir", str(folder)], folder,
                                      env={"STILLHOUSE_TOKEN_HASHES": f"ci {hash_token(TOKEN)}"})
    yield client, folder, urgency
    stop_process_group(process)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_second_step_runs_exactly_where_the_first_said_negative(chain_client, tiny_student_tag):
    client, folder, urgency = chain_client
    assert client.get("/readyz").status_code == 200
    response = client.post("/classify", json={"texts": TEXTS}, headers={**AUTH, "X-Request-ID": "chain-1"})
    assert response.status_code == 200
    body = response.json()
    sentiment, second = body["steps"]
    assert (sentiment["step"], second["step"]) == ("sentiment", "urgency")
    assert sentiment["model_tag"] == tiny_student_tag and second["model_tag"] == urgency
    assert body["model_tag"] == f"{tiny_student_tag},{urgency}"
    for first, then in zip(sentiment["results"], second["results"]):
        assert first["label"] in {"negative", "positive"}
        assert (then is not None) == (first["label"] == "negative")
        assert then is None or then["label"] in {"low", "high"}
    # Both branches taken (the tiny student is deterministic: seed 0, fixed texts).
    assert None in second["results"] and any(r is not None for r in second["results"])
    line = json.loads((folder / "audit.jsonl").read_text().splitlines()[-1])
    assert line["request_id"] == response.headers["x-request-id"] and line["client_request_id"] == "chain-1"
    assert line["output_summary"]["steps"][0]["step"] == "sentiment"


def test_chain_feedback_names_the_step(chain_client, tiny_student_tag):
    client, _, _ = chain_client
    rid = client.post("/classify", json={"texts": TEXTS}, headers=AUTH).headers["x-request-id"]
    ok = client.post("/feedback", json={"request_id": rid, "index": 1, "step": "sentiment",
                                        "label": "negative"}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["model_tag"] == tiny_student_tag
    missing = client.post("/feedback", json={"request_id": rid, "label": "negative"}, headers=AUTH)
    assert missing.status_code == 422 and "not a step of this chain" in missing.json()["error"]
    wrong = client.post("/feedback", json={"text": "x", "step": "urgency", "label": "negative"}, headers=AUTH)
    assert wrong.status_code == 422 and "labels" in wrong.json()["error"]
    assert client.post("/classify", json={"texts": TEXTS}).status_code == 401


def test_chain_feedback_while_another_process_holds_the_database_is_503_and_classify_still_answers(chain_client):
    import sqlite3

    client, folder, _ = chain_client
    holder = sqlite3.connect(str(folder / "feedback.sqlite"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a writer past the server's busy timeout (10 s)
    try:
        held = client.post("/feedback", json={"text": "a held correction", "step": "sentiment",
                                              "label": "negative"}, headers=AUTH)
        assert held.status_code == 503 and held.headers["retry-after"] == "5"
        assert "cannot be written or read now" in held.json()["error"] and "a held correction" not in held.text
        answered = client.post("/classify", json={"texts": TEXTS[:2]}, headers=AUTH)
        assert answered.status_code == 200  # the request is not kept for feedback by id, and says nothing of it
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    for log in ("audit.jsonl", "server.log"):
        assert "a held correction" not in (folder / log).read_text(errors="replace")
    assert "not kept for feedback" in (folder / "server.log").read_text(errors="replace")
    again = client.post("/feedback", json={"text": "a held correction", "step": "sentiment", "label": "negative"},
                        headers=AUTH)
    assert again.status_code == 200


def test_a_chain_waiting_for_labels_its_step_never_outputs_fails_before_serving(tiny_student_tag, tmp_path):
    import subprocess
    import sys

    (tmp_path / "chain.yaml").write_text(json.dumps({"name": "bad", "steps": [
        {"name": "sentiment", "model": tiny_student_tag},
        {"name": "again", "model": tiny_student_tag, "when": {"step": "sentiment", "labels": ["complaint"]}}]}))
    command = [sys.executable, "-m", "stillhouse.cli", "serve", "--chain", str(tmp_path / "chain.yaml"), "--no-auth",
               "--dir", str(tmp_path / "serve")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "waits for label(s) ['complaint'] that step `sentiment` never outputs" in result.stderr
