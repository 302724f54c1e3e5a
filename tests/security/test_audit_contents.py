"""7. Nothing a client wrote reaches the audit log, and its body digest cannot be inverted by guessing.

Before: a 422 quoted unknown field names (only PII-regex filtered, so full-width or obfuscated e-mail addresses
passed), the URL path was logged as sent, and the body hash was an unsalted SHA-256 that recovers a short text
by trying candidates. Now the audit holds route names, fixed reason codes and labels, and an HMAC under the
deployment's audit key.
"""

import hashlib
import hmac
import json

import pytest

from tests.security.conftest import audit_lines, bearer

pytestmark = [pytest.mark.integration, pytest.mark.security]

FULL_WIDTH = "ｊａｎｅ．ｄｏｅ＠ｂａｎｋ．ｃｏ．ｕｋ"
OBFUSCATED = "jane dot doe at bank dot co dot uk"


@pytest.mark.parametrize("field", [FULL_WIDTH, OBFUSCATED, "x" * 300])
def test_unknown_field_names_are_counted_never_quoted(asgi, field):
    client, folder = asgi()
    response = client.post("/classify", json={"texts": ["ok"], field: 1}, headers=bearer())
    assert response.status_code == 422 and "1 unknown field(s)" in response.json()["error"]
    written = (folder / "audit.jsonl").read_text(encoding="utf-8")
    assert field not in written and field not in response.text


def test_the_path_and_client_strings_are_a_fixed_vocabulary(asgi):
    client, folder = asgi()
    client.get(f"/classify/{FULL_WIDTH}", headers=bearer())
    client.request("BREW", "/classify", headers=bearer())
    client.post("/classify", json={"texts": ["ok"]}, headers={**bearer(), "X-Request-ID": FULL_WIDTH.encode()})
    lines = audit_lines(folder / "audit.jsonl")
    assert [(line["method"], line["endpoint"]) for line in lines] == [("GET", "unknown"), ("OTHER", "/classify"),
                                                                     ("POST", "/classify")]
    assert lines[-1]["client_request_id"] is None  # not a plain id: dropped, not logged
    assert FULL_WIDTH not in (folder / "audit.jsonl").read_text(encoding="utf-8")


def test_the_body_digest_is_an_hmac_under_the_deployments_key(asgi):
    client, folder = asgi()
    body = json.dumps({"texts": ["yes"]}).encode()
    client.post("/classify", content=body, headers={**bearer(), "Content-Type": "application/json"})
    line = audit_lines(folder / "audit.jsonl")[-1]
    key = (folder / "audit.key").read_bytes().strip()
    assert line["input_hmac"] == hmac.new(key, body, hashlib.sha256).hexdigest()
    assert line["input_hmac"] != hashlib.sha256(body).hexdigest()  # a guess without the key confirms nothing
    assert len(key) >= 32 and (folder / "audit.key").stat().st_mode & 0o777 == 0o600
