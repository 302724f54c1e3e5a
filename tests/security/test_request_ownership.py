"""6. Request ids are the server's, and stored texts belong to the principal who sent them.

Before: a client-chosen `X-Request-ID` keyed the stored texts with no owner: client B could attach feedback to
client A's request (and learn how many texts it sent), or overwrite A's stored texts so that A's later
correction landed on B's text — poisoning what re-distillation learns.
"""

import sqlite3

import pytest

from tests.security.conftest import ALICE, BOB, bearer

pytestmark = [pytest.mark.integration, pytest.mark.security]


def test_a_client_cannot_choose_the_request_id(asgi):
    client, _ = asgi()
    response = client.post("/classify", json={"texts": ["great"]}, headers={**bearer(), "X-Request-ID": "mine"})
    assert response.headers["x-request-id"] != "mine" and response.headers["x-client-request-id"] == "mine"
    cited = client.post("/feedback", json={"request_id": "mine", "label": "negative"}, headers=bearer())
    assert cited.status_code == 422 and "unknown request_id" in cited.json()["error"]


def test_another_principal_can_neither_cite_nor_probe_a_request(asgi):
    client, _ = asgi()
    rid = client.post("/classify", json={"texts": ["lost my card", "fine", "ok"]}, headers=bearer(ALICE)) \
        .headers["x-request-id"]
    for index in (0, 2, 5):
        stolen = client.post("/feedback", json={"request_id": rid, "index": index, "label": "negative"},
                             headers=bearer(BOB))
        # the same answer as for an id never issued: no text count, no existence
        assert stolen.status_code == 422 and "unknown request_id" in stolen.json()["error"]
        assert "3 text" not in stolen.text
    own = client.post("/feedback", json={"request_id": rid, "index": 0, "label": "negative"}, headers=bearer(ALICE))
    assert own.status_code == 200


def test_reusing_another_clients_request_id_cannot_overwrite_its_texts(asgi):
    client, folder = asgi()
    rid = client.post("/classify", json={"texts": ["alice's real text"]}, headers=bearer(ALICE)) \
        .headers["x-request-id"]
    client.post("/classify", json={"texts": ["bob's poison"]}, headers={**bearer(BOB), "X-Request-ID": rid})
    stored = client.post("/feedback", json={"request_id": rid, "index": 0, "label": "negative"}, headers=bearer(ALICE))
    assert stored.status_code == 200
    rows = sqlite3.connect(folder / "fb.sqlite").execute("SELECT text, principal FROM feedback").fetchall()
    assert rows == [("alice's real text", "alice")]
