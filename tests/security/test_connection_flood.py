"""13. A flood of idle connections locks no one out, one client cannot take every slot, and refusals are audited.

Before: `connections.max_concurrency` counted idle connections, so about 1,100 of them, re-opened just under the
head deadline, made every other client's request a 503 for as long as the flood went on, and those 503s left no
audit line; there was no per-client cap; and over TLS a connection that never started its handshake was held for
60 s (asyncio's default) instead of the head deadline. Now, at a limit, a waiting connection makes room (one that
sent nothing is closed quietly, a half-sent head is answered 503 and audited), one source address holds at most
`connections.max_per_client` connections, and one principal at most `limits.max_requests_per_principal` requests
in flight. The plain server's head deadline outlasts each flood, so every connection it closes was closed to make
room.
"""

import threading
import time

import httpx
import pytest

from tests.security.conftest import (ALICE, BOB, HEAD_TIMEOUT_S, PLAIN_LIMITS, PLAIN_PRINCIPAL_CAP, audit_lines,
                                     bearer, plain_socket, read_until_closed)

pytestmark = [pytest.mark.integration, pytest.mark.security]

FLOOD_S, FLOOD_RATE = 4.0, 60  # seconds (shorter than the server's head deadline), new connections per second
PARTIAL_HEAD = b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def server_side(sock) -> tuple[bytes, bool]:
    """What the server sent on ``sock`` so far, and whether it has closed it."""
    sock.settimeout(0.05)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
        return data, True
    except TimeoutError:
        return data, False
    except OSError:
        return data, True


class Flood(threading.Thread):
    """Opens FLOOD_RATE connections a second from ``sources`` for FLOOD_S and never closes one itself; every
    ``partial_every``-th sends half a head (a slow loris), the others nothing."""

    def __init__(self, server: dict, sources: list[str], partial_every: int):
        super().__init__(daemon=True)
        self.server, self.sources, self.partial_every = server, sources, partial_every
        self.idle, self.partial, self.failed_connects = [], [], 0

    def run(self) -> None:
        deadline, i = time.monotonic() + FLOOD_S, 0
        while time.monotonic() < deadline:
            try:
                sock = plain_socket(self.server, timeout=2, source=self.sources[i % len(self.sources)])
                if i % self.partial_every == 0:
                    sock.sendall(PARTIAL_HEAD)
                    self.partial.append(sock)
                else:
                    self.idle.append(sock)
            except OSError:
                self.failed_connects += 1
            i += 1
            time.sleep(1 / FLOOD_RATE)

    def close(self) -> None:
        for sock in self.idle + self.partial:
            sock.close()


@pytest.mark.parametrize("sources, partial_every", [
    (["127.0.0.1"], 4), (["127.0.0.2"], 1), (["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"], 2)],
    ids=["same-address", "other-address-slow-loris", "four-addresses"])
def test_a_flood_of_idle_connections_locks_no_one_out_and_its_refusals_are_audited(plain, sources, partial_every):
    audit = plain["folder"] / "audit.jsonl"
    before = len([line for line in audit_lines(audit) if line["reason"] == "connection_limit"])
    flood = Flood(plain, sources, partial_every)
    answers = []
    # one client opens a new connection per request (a newcomer is never refused for idle ones), the other keeps
    # its connection alive between requests (an idle keep-alive is the last kind to be closed for room)
    fresh = httpx.Client(base_url=plain["url"], timeout=1.0, limits=httpx.Limits(max_keepalive_connections=0))
    kept = httpx.Client(base_url=plain["url"], timeout=1.0)
    try:
        flood.start()
        time.sleep(0.5)
        while flood.is_alive():
            for name, client in (("fresh", fresh), ("kept", kept)):
                try:
                    answer = client.post("/classify", json={"texts": ["fine"]}, headers=bearer()).status_code
                except httpx.HTTPError as exc:  # includes no answer within the second
                    answer = type(exc).__name__
                answers.append(answer if answer == 200 else f"{name}: {answer}")
            time.sleep(0.05)
        flood.join()
        held = [server_side(sock) for sock in flood.idle]
        half = [server_side(sock) for sock in flood.partial]
    finally:
        fresh.close()
        kept.close()
        flood.close()
    opened = len(flood.idle) + len(flood.partial)
    assert opened > PLAIN_LIMITS["max_concurrency"] and flood.failed_connects == 0
    assert len(answers) >= 20 and set(answers) == {200}, answers
    # the flood's own connections made room: no more of them are open than the caps allow
    still_open = sum(not closed for _, closed in held + half)
    assert still_open <= min(PLAIN_LIMITS["max_per_client"] * len(sources), PLAIN_LIMITS["max_concurrency"])
    assert all(data == b"" for data, _ in held)  # closed quietly: they had sent nothing
    evicted = sum(data.startswith(b"HTTP/1.1 503") for data, _ in half)
    timed_out = sum(data.startswith(b"HTTP/1.1 408") for data, _ in half)  # only on a very slow machine
    assert all(data == b"" or data.startswith((b"HTTP/1.1 503", b"HTTP/1.1 408")) for data, _ in half)
    if partial_every == 1:  # nothing but half-sent heads: room was made from them, each one told and audited
        assert evicted == opened - still_open - timed_out and evicted > opened // 2
    lines = [line for line in audit_lines(audit) if line["reason"] == "connection_limit"]
    assert len(lines) - before == evicted
    assert all(line["status"] == 503 and line["principal"] is None and line["input_hmac"] is None for line in lines)


def release(server: dict, busy: list) -> None:
    """Close the connections that held requests in flight, and wait until the server has seen them go (the next
    test would otherwise meet a full table)."""
    for sock in busy:
        sock.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server['url']}/livez", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)


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
        time.sleep(1.0)  # every head parsed: all of them carry requests in flight
        extra = plain_socket(plain, source="127.0.0.6")
        assert read_until_closed(extra).startswith(b"HTTP/1.1 503")  # refused at once, nothing of its own to drop
        other = httpx.post(f"{plain['url']}/classify", json={"texts": ["ok"]}, headers=bearer(), timeout=5)
        assert other.status_code == 200  # another address is served meanwhile
        lines = [line for line in audit_lines(audit) if line["reason"] == "client_connection_limit"]
        assert len(lines) == len(before) + 1
        assert (lines[-1]["status"], lines[-1]["endpoint"], lines[-1]["principal"]) == (503, "unknown", None)
    finally:
        release(plain, busy)


def test_one_principal_holds_at_most_its_share_of_requests_in_flight(plain):
    cap = PLAIN_PRINCIPAL_CAP
    busy = [in_flight(plain, ALICE, f"127.0.1.{1 + i % 3}") for i in range(cap)]
    try:
        time.sleep(1.0)  # every head parsed: all of them carry requests in flight
        refused = httpx.post(f"{plain['url']}/classify", json={"texts": ["ok"]}, headers=bearer(ALICE), timeout=5)
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert "requests in flight" in refused.json()["error"]
        served = httpx.post(f"{plain['url']}/classify", json={"texts": ["ok"]}, headers=bearer(BOB), timeout=5)
        assert served.status_code == 200
        line = next(line for line in audit_lines(plain["folder"] / "audit.jsonl")
                    if line["request_id"] == refused.headers["x-request-id"])
        assert (line["status"], line["reason"], line["principal"]) == (429, "principal_concurrency_limit", "alice")
    finally:
        release(plain, busy)


def test_a_tls_connection_that_never_starts_its_handshake_is_closed_at_the_head_deadline(live):
    raw = plain_socket(live, timeout=HEAD_TIMEOUT_S * 5)  # before: held for 60 s, and recv timed out here
    try:
        assert raw.recv(1) == b""
    except ConnectionResetError:
        pass
    finally:
        raw.close()
