"""13. A flood of idle connections locks no one out, one client cannot take every slot, and refusals are audited.

Before: `connections.max_concurrency` counted idle connections, so about 1,100 of them, re-opened just under the
head deadline, made every other client's request a 503 for as long as the flood went on, and those 503s left no
audit line; there was no per-client cap; and over TLS a connection that never started its handshake was held for
60 s (asyncio's default) instead of the head deadline. Now, at the limit, the connections waiting longest for a
request are closed first (silently if they sent nothing, 503 and audited if they had sent part of a head), one
source address holds at most `connections.max_per_client` connections, and one principal at most
`limits.max_requests_per_principal` requests in flight.
"""

import threading
import time

import httpx
import pytest

from tests.security.conftest import (ALICE, BOB, HEAD_TIMEOUT_S, PLAIN_LIMITS, PLAIN_PRINCIPAL_CAP, audit_lines,
                                     bearer, plain_socket, read_until_closed)

pytestmark = [pytest.mark.integration, pytest.mark.security]

FLOOD_S, FLOOD_RATE, PARTIAL_EVERY = 6.0, 60, 4  # seconds, new connections per second, every 4th sends half a head
PARTIAL_HEAD = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


class Flood(threading.Thread):
    """Opens FLOOD_RATE connections a second from ``sources`` for FLOOD_S and never closes one itself."""

    def __init__(self, server: dict, sources: list[str]):
        super().__init__(daemon=True)
        self.server, self.sources = server, sources
        self.idle, self.partial, self.refused_connects = [], [], 0

    def run(self) -> None:
        deadline, i = time.monotonic() + FLOOD_S, 0
        while time.monotonic() < deadline:
            try:
                sock = plain_socket(self.server, timeout=2, source=self.sources[i % len(self.sources)])
                if i % PARTIAL_EVERY == 0:
                    sock.sendall(PARTIAL_HEAD)  # a head that never ends (slow loris)
                    self.partial.append(sock)
                else:
                    self.idle.append(sock)
            except OSError:
                self.refused_connects += 1
            i += 1
            time.sleep(1 / FLOOD_RATE)

    def closed_by_server(self) -> int:
        closed = 0
        for sock in self.idle:
            sock.settimeout(0.05)
            try:
                closed += sock.recv(1) == b""
            except TimeoutError:
                pass
            except OSError:
                closed += 1
        return closed

    def answers(self) -> list[bytes]:
        """What each half-sent head got before now (b"" if still open or closed silently)."""
        out = []
        for sock in self.partial:
            sock.settimeout(0.05)
            data = b""
            try:
                while chunk := sock.recv(4096):
                    data += chunk
            except OSError:
                pass
            out.append(data)
        return out

    def close(self) -> None:
        for sock in self.idle + self.partial:
            sock.close()


@pytest.mark.parametrize("sources", [["127.0.0.1"], ["127.0.0.2"], ["127.0.0.2", "127.0.0.3", "127.0.0.4",
                                                                    "127.0.0.5"]],
                         ids=["same-address", "other-address", "four-addresses"])
def test_a_flood_of_idle_connections_locks_no_one_out_and_its_refusals_are_audited(plain, sources):
    audit = plain["folder"] / "audit.jsonl"
    before = len([line for line in audit_lines(audit) if line["reason"] == "connection_limit"])
    flood = Flood(plain, sources)
    answers = []
    with httpx.Client(base_url=plain["url"], timeout=1.0) as client:  # keeps its connection alive between requests
        flood.start()
        time.sleep(0.5)
        while flood.is_alive():
            try:
                answers.append(client.post("/classify", json={"texts": ["fine"]}, headers=bearer()).status_code)
            except httpx.HTTPError as exc:  # includes no answer within the second
                answers.append(type(exc).__name__)
            time.sleep(0.1)
    flood.join()
    try:
        opened = len(flood.idle) + len(flood.partial)
        assert opened > PLAIN_LIMITS["max_concurrency"] and flood.refused_connects == 0
        assert len(answers) >= 20 and set(answers) == {200}, answers
        assert flood.closed_by_server() > opened // 3  # the flood's own connections made room, not the client's
        refused = [a for a in flood.answers() if a]
        assert all(a.startswith((b"HTTP/1.1 503", b"HTTP/1.1 408")) for a in refused), refused[:3]
        evicted = sum(a.startswith(b"HTTP/1.1 503") for a in refused)
        lines = [line for line in audit_lines(audit) if line["reason"] == "connection_limit"]
        assert len(lines) - before == evicted
        assert all(line["status"] == 503 and line["principal"] is None and line["input_hmac"] is None
                   for line in lines)
    finally:
        flood.close()


def in_flight(server: dict, token: str, source: str):
    """A connection holding an authenticated request in flight: its body is announced and never sent."""
    sock = plain_socket(server, source=source)
    sock.sendall(b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + token.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n")
    return sock


def test_one_address_holds_at_most_its_share_of_busy_connections(plain):
    cap, audit = PLAIN_LIMITS["max_per_client"], plain["folder"] / "audit.jsonl"
    before = [line for line in audit_lines(audit) if line["reason"] == "client_connection_limit"]
    busy = [in_flight(plain, ALICE if i % 2 else BOB, "127.0.0.6") for i in range(cap)]
    try:
        time.sleep(0.5)
        extra = plain_socket(plain, source="127.0.0.6")
        assert read_until_closed(extra).startswith(b"HTTP/1.1 503")  # refused at once, nothing of its own to drop
        other = httpx.post(f"{plain['url']}/classify", json={"texts": ["ok"]}, headers=bearer(), timeout=5)
        assert other.status_code == 200  # another address is served meanwhile
        lines = [line for line in audit_lines(audit) if line["reason"] == "client_connection_limit"]
        assert len(lines) == len(before) + 1
        assert (lines[-1]["status"], lines[-1]["endpoint"], lines[-1]["principal"]) == (503, "unknown", None)
    finally:
        for sock in busy:
            sock.close()


def test_one_principal_holds_at_most_its_share_of_requests_in_flight(plain):
    cap = PLAIN_PRINCIPAL_CAP
    busy = [in_flight(plain, ALICE, f"127.0.1.{1 + i % 3}") for i in range(cap)]
    try:
        time.sleep(0.5)
        refused = httpx.post(f"{plain['url']}/classify", json={"texts": ["ok"]}, headers=bearer(ALICE), timeout=5)
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert "requests in flight" in refused.json()["error"]
        served = httpx.post(f"{plain['url']}/classify", json={"texts": ["ok"]}, headers=bearer(BOB), timeout=5)
        assert served.status_code == 200
        line = next(line for line in audit_lines(plain["folder"] / "audit.jsonl")
                    if line["request_id"] == refused.headers["x-request-id"])
        assert (line["status"], line["reason"], line["principal"]) == (429, "principal_concurrency_limit", "alice")
    finally:
        for sock in busy:
            sock.close()


def test_a_tls_connection_that_never_starts_its_handshake_is_closed_at_the_head_deadline(live):
    raw = plain_socket(live, timeout=HEAD_TIMEOUT_S * 5)  # before: held for 60 s, and recv timed out here
    try:
        assert raw.recv(1) == b""
    except ConnectionResetError:
        pass
    finally:
        raw.close()
