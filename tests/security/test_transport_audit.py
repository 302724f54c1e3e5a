"""14. Requests refused before the middleware sees them are audited and logged like every other refusal.

Before: 431, 414, 408, the parser's 400 and the concurrency limit's 503 left no audit line, although the audit log
promises one per request "including refused ones", and 431/414/408 left nothing in the server log either. Now the
connection layer writes one audit line per refused request (a fixed reason code, never a byte of the client's),
answers with the line's request id, and logs each kind of refusal (at most one line per kind a minute). A
connection that never sent a byte carried no request: it is closed at the head deadline without a line, so an
idle flood cannot write the audit log full.
"""

import re

import pytest

from tests.security.conftest import (ALICE, BOB, HEAD_TIMEOUT_S, PLAIN_LIMITS, audit_lines, plain_socket,
                                     read_until_closed)

pytestmark = [pytest.mark.integration, pytest.mark.security]

MARK = b"zqxclientbytes"  # in every refused head: found in the audit log means client data leaked
REFUSALS = {
    "head_too_large": (431, b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-" + MARK + b": " + b"a" * 40_000
                       + b"\r\n\r\n"),
    "too_many_headers": (431, b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         + b"".join(b"X-" + MARK + b"%d: 1\r\n" % i for i in range(150)) + b"\r\n"),
    "url_too_long": (414, b"GET /" + MARK + b"a" * 40_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    "malformed_request": (400, b"GET /" + MARK + b" HTTP/1.1\r\nHo st: \x00\x01\r\n\r\n"),
    "head_timeout": (408, b"GET /" + MARK + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"),  # never finished
}


def request_id_of(answer: bytes) -> str:
    found = re.search(rb"\r\nx-request-id: ([0-9a-f]+)\r\n", answer, re.IGNORECASE)
    assert found, answer[:300]
    return found.group(1).decode()


@pytest.mark.parametrize("reason", sorted(REFUSALS))
def test_each_refusal_below_the_middleware_has_one_audit_line_and_a_log_line(plain, reason):
    status, head = REFUSALS[reason]
    sock = plain_socket(plain, timeout=HEAD_TIMEOUT_S * 5)
    sock.sendall(head)
    answer = read_until_closed(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:80]
    request_id = request_id_of(answer)
    audit = plain["folder"] / "audit.jsonl"
    lines = [line for line in audit_lines(audit) if line["request_id"] == request_id]
    assert len(lines) == 1
    assert {key: lines[0][key] for key in ("status", "reason", "principal", "input_hmac", "endpoint")} == {
        "status": status, "reason": reason, "principal": None, "input_hmac": None, "endpoint": "unknown"}
    assert MARK not in audit.read_bytes()
    assert reason in plain["log"].read_text() and MARK not in plain["log"].read_bytes()


def test_a_connection_that_never_sends_a_byte_is_closed_without_an_audit_line(plain):
    audit = plain["folder"] / "audit.jsonl"
    before = len(audit_lines(audit))
    sock = plain_socket(plain, timeout=HEAD_TIMEOUT_S * 5)
    assert read_until_closed(sock) == b""  # closed at the head deadline; the socket timeout would raise
    sock.close()
    assert len(audit_lines(audit)) == before


def test_the_concurrency_limits_503_is_audited(plain):
    """Every connection carries a request in flight (so none can make room): the next request is refused."""
    from tests.security.test_connection_flood import in_flight

    per_address = PLAIN_LIMITS["max_per_client"] - 4
    addresses = [f"127.0.2.{i}" for i in range(1, 1 + -(-PLAIN_LIMITS["max_concurrency"] // per_address))]
    busy = [in_flight(plain, ALICE if i % 2 else BOB, addresses[i // per_address])
            for i in range(PLAIN_LIMITS["max_concurrency"])]
    try:
        import time

        time.sleep(0.5)
        sock = plain_socket(plain, source="127.0.2.99")
        sock.sendall(b"GET /" + MARK + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until_closed(sock)
        sock.close()
    finally:
        for held in busy:
            held.close()
    assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
    line = next(line for line in audit_lines(plain["folder"] / "audit.jsonl")
                if line["request_id"] == request_id_of(answer))
    assert (line["status"], line["reason"], line["endpoint"]) == (503, "server_busy", "unknown")
    assert "server_busy" in plain["log"].read_text()
