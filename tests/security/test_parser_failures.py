"""5. No body makes the middleware fail: deep nesting and huge numbers are 422s, answered at once and audited.

Before: deeply nested JSON (RecursionError) and an integer literal of thousands of digits (ValueError: Python
refuses to convert more than 4,300 digits) escaped the middleware's checks: the request hung until BentoML's
60 s timeout, ended in a 500, and left no audit line.
"""

import httpx
import pytest

from tests.security.conftest import audit_lines, bearer

pytestmark = [pytest.mark.integration, pytest.mark.security]

HUGE = "9" * 5000


def bodies():
    return {
        "nested-arrays": ("/classify", b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "nested-objects": ("/classify", b'{"texts": ' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}"),
        "huge-int-in-texts": ("/classify", b'{"texts": [' + HUGE.encode() + b"]}"),
        "huge-int-in-comment": ("/feedback", b'{"label": "negative", "text": "x", "comment": ' + HUGE.encode()
                                + b"}"),
        "huge-int-index": ("/feedback", b'{"label": "negative", "request_id": "r", "index": ' + HUGE.encode()
                           + b"}"),
        "huge-negative-int": ("/feedback", b'{"label": "negative", "text": "x", "index": -' + HUGE.encode() + b"}"),
        "huge-int-top-k": ("/rerank", b'{"query": "q", "passages": ["p"], "top_k": ' + HUGE.encode() + b"}"),
        "huge-float": ("/rerank", b'{"query": "q", "passages": ["p"], "top_k": 1e999}'),
        "nan": ("/feedback", b'{"label": "negative", "text": "x", "index": NaN}'),
        "duplicate-keys": ("/classify", b'{"texts": ["a"], "texts": 5}'),
    }


@pytest.mark.parametrize("name", sorted(bodies()))
def test_parser_failures_are_422_and_audited(asgi, name):
    route, body = bodies()[name]
    # /rerank is a re-ranker's route: its bodies go to a re-ranker's service
    client, folder = asgi(task="reranking" if route == "/rerank" else "classification",
                          limits={"max_body_bytes": 1_000_000})
    response = client.post(route, content=body, headers={**bearer(), "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["fix"]
    line = audit_lines(folder / "audit.jsonl")[-1]
    assert line["request_id"] == response.headers["x-request-id"] and line["status"] == 422
    assert line["reason"] == "invalid_request"


@pytest.mark.parametrize("name", ["nested-arrays", "huge-int-in-comment", "huge-int-in-texts"])
def test_the_real_server_answers_them_at_once(live, name):
    route, body = bodies()[name]
    response = live["client"].post(route, content=body, headers={**bearer(), "Content-Type": "application/json"},
                                   timeout=httpx.Timeout(5.0))
    assert response.status_code == 422
