"""11. The smaller ones: telemetry, repeated Authorization headers, forged log lines, spreadsheet formulas in
the feedback export, retried feedback stored twice.
"""

import csv
import json
import logging
import sqlite3

import psutil
import pytest

from stillhouse.serve.feedback import FeedbackStore, export_feedback
from tests.security.conftest import ALICE, BOB, bearer, read_until_closed, tls_socket

pytestmark = [pytest.mark.integration, pytest.mark.security]


def test_bentoml_usage_telemetry_is_off_in_every_server_process(live):
    root = psutil.Process(live["process"].pid)
    for process in [root, *root.children(recursive=True)]:
        assert process.environ().get("BENTOML_DO_NOT_TRACK") == "True"


def test_two_authorization_headers_are_refused_whatever_their_order(asgi):
    client, folder = asgi()
    for pair in ([("Authorization", f"Bearer {BOB}"), ("Authorization", f"Bearer {ALICE}")],
                 [("Authorization", f"Bearer {ALICE}"), ("Authorization", "Bearer wrong")]):
        response = client.post("/classify", json={"texts": ["ok"]}, headers=pair)
        assert response.status_code == 400 and "more than once" in response.json()["error"]
    lines = [json.loads(line) for line in (folder / "audit.jsonl").read_text().splitlines()]
    assert [(line["status"], line["reason"], line["principal"]) for line in lines] == [
        (400, "repeated_header", None)] * 2


def test_crlf_in_the_path_cannot_forge_a_log_line(live):
    forged = "2026-01-01T00:00:00+0000 [INFO] [entry_service] forged"
    sock = tls_socket(live)
    sock.sendall(b"GET /x%0d%0a" + forged.replace(" ", "%20").encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Connection: close\r\n\r\n")
    read_until_closed(sock)
    assert not any(line.startswith(forged[:24]) for line in live["log"].read_text().splitlines())


def test_log_hygiene_escapes_line_breaks_and_withholds_exception_messages(caplog):
    from stillhouse.serve.logs import install_log_hygiene

    install_log_hygiene()
    logger = logging.getLogger("bentoml.test")
    with caplog.at_level(logging.INFO):
        logger.info("path=%s", "/a\r\n2026 [INFO] forged")
        body = b'{"texts": ["jane.doe@bank.co.uk"]}'
        try:
            raise ValueError(f"input_value={body!r}")  # as pydantic quotes a body it could not parse
        except ValueError:
            logger.exception("failed")
    text = caplog.text
    assert "\n2026 [INFO] forged" not in text and "\\x0d\\x0a2026" in text
    assert "jane.doe" not in text and "ValueError: [message withheld" in text and "Traceback" in text


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\",\"y\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
                                  "\tTAB"])
def test_the_csv_export_cannot_run_as_a_spreadsheet_formula_and_jsonl_keeps_the_text(tmp_path, text):
    store = FeedbackStore(tmp_path / "fb.sqlite")
    store.add("a", ["a"], text=text, comment=text)
    export_feedback(tmp_path / "fb.sqlite", tmp_path / "seed.csv")
    row = next(csv.DictReader(open(tmp_path / "seed.csv", encoding="utf-8")))
    assert row["text"] == "'" + text and row["comment"] == "'" + text
    export_feedback(tmp_path / "fb.sqlite", tmp_path / "seed.jsonl")
    assert json.loads((tmp_path / "seed.jsonl").read_text().splitlines()[0])["text"] == text


def test_an_idempotency_key_stores_a_retried_correction_once(asgi):
    client, folder = asgi()
    headers = {**bearer(), "Idempotency-Key": "3f6c1b0e-retry-1"}
    first = client.post("/feedback", json={"text": "lost my card", "label": "negative"}, headers=headers)
    again = client.post("/feedback", json={"text": "lost my card", "label": "negative"}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert first.json()["feedback_id"] == again.json()["feedback_id"]
    other = client.post("/feedback", json={"text": "lost my card", "label": "positive"}, headers=headers)
    assert other.status_code == 422 and "different correction" in other.json()["error"]
    bobs = client.post("/feedback", json={"text": "lost my card", "label": "negative"},
                       headers={**bearer(BOB), "Idempotency-Key": "3f6c1b0e-retry-1"})  # keys are per principal
    assert bobs.status_code == 200 and bobs.json()["feedback_id"] != first.json()["feedback_id"]
    bad = client.post("/feedback", json={"text": "x", "label": "negative"},
                      headers={**bearer(), "Idempotency-Key": "has spaces/and slashes"})
    assert bad.status_code == 422
    assert sqlite3.connect(folder / "fb.sqlite").execute("SELECT COUNT(*) FROM feedback").fetchone() == (2,)
