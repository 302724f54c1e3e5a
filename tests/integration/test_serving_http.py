"""The student service over HTTP through its ASGI app (real BentoML app, middleware, model store, SQLite)."""

import importlib
import json
import logging
import os
import re

import pytest

from stillhouse.serve.tokens import hash_token

pytestmark = pytest.mark.integration

TOKEN = "test-token-of-alice"
EMAIL = "jane.doe@bank.co.uk"


@pytest.fixture(scope="module")
def served(tiny_student_tag, tmp_path_factory):
    from starlette.testclient import TestClient

    folder = tmp_path_factory.mktemp("serve")
    config = folder / "serve.yaml"
    config.write_text(json.dumps({
        "model": tiny_student_tag, "auth": {"tokens_file": str(folder / "tokens")},
        "limits": {"max_body_bytes": 4000, "max_texts": 4, "max_text_chars": 200},
        "audit": {"path": str(folder / "audit.jsonl")}, "feedback": {"path": str(folder / "feedback.sqlite")},
    }))
    (folder / "tokens").write_text(f"alice {hash_token(TOKEN)}\n")
    os.environ["STILLHOUSE_SERVE_CONFIG"] = str(config)
    import stillhouse.serving.classification_service as module

    module = importlib.reload(module)  # the service reads its config on import; another test may have imported it

    with TestClient(module.Classifier.to_asgi()) as client:
        yield client, folder
    os.environ.pop("STILLHOUSE_SERVE_CONFIG")


def auth(token=TOKEN):
    return {"Authorization": f"Bearer {token}"}


def audit_lines(folder):
    return [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]


def test_probes_are_open_and_ready_after_warm_up(served):
    client, _ = served
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").status_code == 200


def test_classify_answers_labels_probabilities_and_the_model_tag(served, tiny_student_tag):
    client, _ = served
    response = client.post("/classify", json={"texts": ["great and happy", "awful and broken"]}, headers={
        **auth(), "X-Request-ID": "req-1"})
    # the id is the server's; the client's is only echoed as a correlation id
    assert response.status_code == 200 and re.fullmatch("[0-9a-f]{32}", response.headers["x-request-id"])
    assert response.headers["x-client-request-id"] == "req-1"
    body = response.json()
    assert body["model_tag"] == tiny_student_tag and body["model_version"] == tiny_student_tag.split(":")[1]
    assert len(body["results"]) == 2
    for result in body["results"]:
        assert result["label"] in {"negative", "positive"}
        assert abs(sum(result["probabilities"].values()) - 1) < 1e-4
        assert result["confidence"] == pytest.approx(result["probabilities"][result["label"]], abs=1e-5)


@pytest.mark.parametrize("headers", [{}, auth("wrong-token"), {"Authorization": TOKEN}])
def test_missing_or_wrong_token_is_401_without_detail(served, headers):
    client, _ = served
    response = client.post("/classify", json={"texts": ["hello"]}, headers=headers)
    assert response.status_code == 401 and response.json() == {"error": "unauthorized"}
    assert client.get("/metrics", headers=headers).status_code == 401


@pytest.mark.parametrize("body, status, message", [
    ({"texts": ["x" * 3000, "y" * 1500]}, 413, "request body over 4,000 bytes"),
    ({"texts": ["a", "b", "c", "d", "e"]}, 422, "5 texts in one request; the limit is 4"),
    ({"texts": [f"{EMAIL} " * 20]}, 422, r"texts\[0\] has 400 characters; the limit is 200"),
    ({"texts": "not a list"}, 422, "`texts` is missing or not a list"),
    ({"texts": [1]}, 422, r"texts\[0\] is not a string"),
])
def test_bad_requests_are_refused_with_a_clear_message(served, body, status, message):
    client, _ = served
    response = client.post("/classify", json=body, headers=auth())
    assert response.status_code == status
    assert re.search(message, response.json()["error"])
    assert EMAIL not in response.text


def test_malformed_json_is_422_not_500(served):
    client, _ = served
    response = client.post("/classify", content=b"{texts: [", headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["error"]


def test_feedback_by_request_id_is_stored_and_bad_labels_are_422(served):
    client, folder = served
    rid = client.post("/classify", json={"texts": ["lost my card", "great"]}, headers=auth()).headers["x-request-id"]
    stored = client.post("/feedback", json={"request_id": rid, "index": 0, "label": "negative"}, headers=auth())
    assert stored.status_code == 200 and stored.json()["status"] == "stored"
    wrong = client.post("/feedback", json={"request_id": rid, "label": "complaint"}, headers=auth())
    assert wrong.status_code == 422 and "not one of the model's 2 labels" in wrong.json()["error"]
    from stillhouse.serve.feedback import export_feedback

    assert export_feedback(folder / "feedback.sqlite", folder / "seed.csv") >= 1
    assert "lost my card,negative" in (folder / "seed.csv").read_text()


def test_every_request_is_audited_without_text_token_or_pii(served, caplog):
    client, folder = served
    caplog.set_level(logging.DEBUG)
    before = len(audit_lines(folder))
    texts = [f"my card 4111 1111 1111 1111 and mail {EMAIL}", "hello"]
    served = client.post("/classify", json={"texts": texts}, headers={**auth(), "X-Request-ID": "pii-1"})
    client.post("/classify", json={"texts": texts * 3}, headers=auth())  # 422: too many
    client.post("/classify", json={"texts": texts}, headers=auth("bad"))  # 401
    client.post("/feedback", json={"text": texts[0], "label": "negative", "comment": EMAIL}, headers=auth())
    lines = audit_lines(folder)[before:]
    assert [line["status"] for line in lines] == [200, 422, 401, 200]
    ok = lines[0]
    assert ok["request_id"] == served.headers["x-request-id"] and ok["client_request_id"] == "pii-1"
    assert ok["principal"] == "alice" and ok["endpoint"] == "/classify"
    assert ok["model_tag"] and ok["model_version"] and len(ok["input_hmac"]) == 64
    assert len(ok["output_summary"]["labels"]) == 2 and ok["latency_ms"] > 0
    assert lines[2]["principal"] is None
    written = (folder / "audit.jsonl").read_text() + caplog.text
    for secret in (EMAIL, "4111 1111", TOKEN, "hello"):
        assert secret not in written
