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

from tests.security.conftest import ALICE, BOB, PLAIN_LIMITS, audit_lines, plain_socket, read_until_closed

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
    sock = plain_socket(plain, timeout=PLAIN_LIMITS["head_timeout_s"] * 3)
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
    # at most one line per kind a minute: this kind's line may be an earlier refusal's on the same server (the
    # rate limit itself: tests/unit/test_serve_hardening.py)
    assert reason in plain["log"].read_text() and MARK not in plain["log"].read_bytes()


def test_a_connection_that_never_sends_a_byte_is_closed_without_an_audit_line(plain):
    audit = plain["folder"] / "audit.jsonl"
    before = len(audit_lines(audit))
    sock = plain_socket(plain, timeout=PLAIN_LIMITS["head_timeout_s"] * 3)
    assert read_until_closed(sock) == b""  # closed at the head deadline; the socket timeout would raise
    sock.close()
    assert len(audit_lines(audit)) == before


def test_the_concurrency_limits_503_is_audited(plain):
    """Every connection carries a request in flight (so none can make room): the next request is refused."""
    from tests.security.test_connection_flood import in_flight, release

    per_address = PLAIN_LIMITS["max_per_client"] - 4
    addresses = [f"127.0.2.{i}" for i in range(1, 1 + -(-PLAIN_LIMITS["max_concurrency"] // per_address))]
    busy = [in_flight(plain, ALICE if i % 2 else BOB, addresses[i // per_address])
            for i in range(PLAIN_LIMITS["max_concurrency"])]
    try:
        import time

        time.sleep(1.0)  # every head parsed: all of them carry requests in flight
        sock = plain_socket(plain, source="127.0.2.99")
        sock.sendall(b"GET /" + MARK + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = read_until_closed(sock)
        sock.close()
    finally:
        release(plain, busy)
    assert answer.startswith(b"HTTP/1.1 503"), answer[:80]
    line = next(line for line in audit_lines(plain["folder"] / "audit.jsonl")
                if line["request_id"] == request_id_of(answer))
    assert (line["status"], line["reason"], line["endpoint"]) == (503, "server_busy", "unknown")
    assert "server_busy" in plain["log"].read_text()


def trickled_until_closed(sock, chunk: bytes, within_s: float) -> bool:
    """Send ``chunk`` every 0.5 s (each one keeps uvicorn's keep-alive timer from firing) until the server closes
    the connection (True) or ``within_s`` passes (False)."""
    import time

    sock.settimeout(0.5)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            sock.sendall(chunk)
            if sock.recv(1 << 16) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_a_connection_answered_before_its_body_arrived_is_closed(plain):
    """Before: after an early answer (401 here) the parser went on reading the body for as long as the client sent
    it, each byte postponing the keep-alive timer: a client without a token kept the connection and the parser
    busy."""
    sock = plain_socket(plain, timeout=5)
    sock.sendall(b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100000000\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 401")
    assert trickled_until_closed(sock, b"x" * 100, PLAIN_LIMITS["head_timeout_s"] * 3)
    sock.close()


def test_stray_bytes_after_a_response_do_not_keep_a_connection_open(plain):
    """Before: any byte cancelled the keep-alive timer and started no deadline, so a CRLF every few seconds held a
    connection for ever. Now the head deadline runs from the first byte that follows a response."""
    sock = plain_socket(plain, timeout=5)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert trickled_until_closed(sock, b"\r\n", PLAIN_LIMITS["head_timeout_s"] * 3)  # begins no request
    sock.close()


def test_an_upgrade_request_cannot_smuggle_a_second_request(plain):
    """Before: the parser stops at an upgrade (its body is not read as a body) and went on parsing what followed as
    new requests, so a body that a proxy forwarded as data was served as a request of its own."""
    smuggled = (b"POST /feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + ALICE.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n"
                + b'{"text": "smuggled", "label": "bad"}')
    audit = plain["folder"] / "audit.jsonl"
    before = len(audit_lines(audit))
    sock = plain_socket(plain, timeout=PLAIN_LIMITS["head_timeout_s"] * 3)
    sock.sendall(b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + ALICE.encode()
                 + b"\r\nConnection: upgrade\r\nUpgrade: foo\r\nContent-Type: application/json\r\n"
                 + b"Content-Length: %d\r\n\r\n" % len(smuggled))
    import time

    time.sleep(0.3)  # the body in a read of its own, as a proxy may forward it
    try:
        sock.sendall(smuggled)
    except OSError:
        pass
    answer = read_until_closed(sock)
    sock.close()
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection closed
    assert [line["endpoint"] for line in audit_lines(audit)[before:]] == ["/classify"]


def test_a_pipelined_request_whose_body_is_still_arriving_is_served(plain):
    """The close-after-an-early-answer rule applies to the request answered, not to one pipelined behind it."""
    import json
    import time

    body = json.dumps({"texts": ["fine"]}).encode()
    sock = plain_socket(plain, timeout=10)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nPOST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Authorization: Bearer " + ALICE.encode() + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body) + body[:5])
    time.sleep(0.5)  # the first answer goes out while the second body is incomplete
    sock.sendall(body[5:] + b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    answers = read_until_closed(sock)
    sock.close()
    assert re.findall(rb"HTTP/1.1 (\d{3})", answers) == [b"200", b"200", b"200"]


def test_requests_pipelined_past_the_allowance_are_refused_and_those_before_them_answered(plain):
    """Before: every head in a read was queued behind the request in flight, each holding memory until it ran:
    a 256 KiB read of tiny requests queued thousands per connection, without a token."""
    from stillhouse.serve.transport import MAX_PIPELINED

    audit = plain["folder"] / "audit.jsonl"
    before = [line for line in audit_lines(audit) if line["reason"] == "too_many_pipelined"]
    sock = plain_socket(plain, timeout=10)
    sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * (MAX_PIPELINED * 3))
    answers = re.findall(rb"HTTP/1.1 (\d{3})", read_until_closed(sock))
    sock.close()
    assert 1 <= len(answers) <= MAX_PIPELINED + 1 and set(answers) == {b"200"}
    after = [line for line in audit_lines(audit) if line["reason"] == "too_many_pipelined"]
    assert len(after) == len(before) + 1 and after[-1]["status"] == 503


def test_a_body_cut_off_by_a_disconnect_is_not_served(plain):
    """Before: a disconnect ended the body early and what had arrived was served: a prefix that is valid JSON
    stored a correction the client never finished sending."""
    import sqlite3
    import time

    prefix = b'{"text": "cut off", "label": "negative"}'
    sock = plain_socket(plain, timeout=5)
    sock.sendall(b"POST /feedback HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + ALICE.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (len(prefix) + 50) + prefix)
    time.sleep(0.5)
    sock.close()
    audit = plain["folder"] / "audit.jsonl"
    deadline = time.monotonic() + 10

    def cut_off() -> bool:  # earlier tests on this server left body_incomplete lines of their own routes
        return any(line["reason"] == "body_incomplete" and line["endpoint"] == "/feedback" for line in audit_lines(audit))

    while time.monotonic() < deadline and not cut_off():
        time.sleep(0.2)
    assert cut_off()
    stored = sqlite3.connect(plain["folder"] / "feedback.sqlite").execute(
        "SELECT COUNT(*) FROM feedback WHERE text = 'cut off'").fetchone()
    assert stored == (0,)
