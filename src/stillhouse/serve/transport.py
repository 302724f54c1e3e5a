"""The connection layer of a served student: connection limits, HTTP/1.1 head limits and deadlines, the TLS policy,
and an audit line for every request refused before the middleware sees it.

BentoML runs each worker as one uvicorn server on one event loop, with uvicorn's httptools protocol, which limits
nothing about a request's head (httptools accumulates a header by concatenation: one 64 MB header took seconds of
the loop's time), never closes a connection that sends nothing, and counts idle connections against its
concurrency limit (about 1,100 idle connections locked every other client out). :class:`GuardedHttpProtocol`:

- admits each connection through a :class:`~stillhouse.serve.connections.ConnectionTable` (per-address and
  per-worker caps; at a cap the connection that has waited longest without a request makes room);
- bounds a request head (``connections.max_head_bytes``, 431; a longer URL alone is 414) and its header count
  (``connections.max_headers``, 431), counted per request as bytes arrive and as the parser reports the URL and
  each header, so a big head costs at most one read, whether it arrives in many reads or in one;
- gives every head a deadline (``connections.head_timeout_s``) from the moment the connection was accepted (a TLS
  handshake included: ``tls_handshake_deadline``) or from the first byte of a next request on a kept-alive one;
- refuses requests over ``max_concurrency`` in flight (503);
- answers every refusal with JSON naming the problem and the fix and the request's ``X-Request-ID``, writes its
  audit line first (a fixed reason code, nothing the client sent), and logs each kind at most once a minute (so a
  flood cannot flood the log). A connection that never sent a byte carried no request: it is closed without a line.

TLS (``tls_context``): TLS 1.2 or 1.3 only, and for TLS 1.2 only ECDHE key exchange with AEAD ciphers
(Mozilla's "intermediate" profile); uvicorn's default cipher string ``TLSv1`` offered TLS 1.2 clients nothing but
CBC suites with SHA-1 MACs, so modern AEAD-only clients were refused.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import ssl
from collections import Counter

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from stillhouse.serve.audit import REQUEST_ID_HEADER, AuditLog, method_name, new_request_id, route_name
from stillhouse.serve.config import ConnectionsConfig
from stillhouse.serve.connections import FRESH, IDLE, PARTIAL_HEAD, ConnectionTable

# Mozilla server-side TLS guidelines, intermediate configuration (v5.7), forward secrecy and AEAD only, without its
# DHE suites: a server offers those only with DH parameters loaded, which Python's ssl does not do by default (they
# were listed here and never negotiated), and every client that has AEAD suites has ECDHE too.
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
CLOSE_GRACE_S = 0.2
LOG_EVERY_S = 60.0
# reason code: (status, problem, fix). The codes are the audit log's `reason` vocabulary for this layer.
REFUSALS = {
    "url_too_long": (414, "the request URL is too long", "send a shorter URL"),
    "head_too_large": (431, "the request head (request line and headers) is too large",
                       "send fewer or shorter headers"),
    "too_many_headers": (431, "the request has too many header fields", "send fewer headers"),
    "head_timeout": (408, "the request head did not arrive in time", "send the whole request head at once"),
    "malformed_request": (400, "the request is not valid HTTP/1.1", "send a well-formed HTTP/1.1 request"),
    "server_busy": (503, "the server is at its limit of connections and requests in flight", "retry shortly"),
    "client_connection_limit": (503, "too many connections from your address carry requests in flight",
                                "wait for answers before opening more connections, or reuse the ones you have"),
    "connection_limit": (503, "the server closed this connection to make room while its request head was "
                         "incomplete", "send the whole request head at once, right after connecting"),
}
_RETRY_AFTER = {503: b"retry-after: 1\r\n"}
logger = logging.getLogger("stillhouse.serving")


def tls_context(config, default_factory) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: its context (certificate, key, client CAs) with Stillhouse's policy."""
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD and are not affected by this list
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return context


@contextlib.contextmanager
def tls_handshake_deadline(loop, seconds: float):
    """Within the block, servers created on ``loop`` give a TLS handshake ``seconds`` (asyncio's default is 60 s,
    so a connection that never started one was held a minute). uvicorn passes no ``ssl_handshake_timeout``."""
    loop.create_server = functools.partial(loop.create_server, ssl_handshake_timeout=seconds)
    try:
        yield
    finally:
        del loop.create_server  # the loop's own method again


def refusal_response(reason: str, request_id: str) -> bytes:
    status, problem, fix = REFUSALS[reason]
    body = json.dumps({"error": problem, "fix": fix}).encode()
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: " + str(len(body)).encode() + b"\r\n", _RETRY_AFTER.get(status, b""),
                     REQUEST_ID_HEADER.encode() + b": " + request_id.encode() + b"\r\n",
                     b"connection: close\r\n\r\n", body])


class ConnectionGuard:
    """One worker's connection table, and the audit and log of what its connection layer refuses."""

    def __init__(self, limits: ConnectionsConfig, audit: AuditLog | None = None, fsync: str = "changes",
                 routes: frozenset[str] = frozenset()):
        self.table = ConnectionTable(limits.max_concurrency, limits.max_per_client)
        self.audit, self.fsync, self.routes = audit, fsync, routes
        self._logged_at: dict[str, float] = {}
        self._held: Counter = Counter()

    def record(self, loop, reason: str, method: str | None, path: str | None, started: float) -> str:
        """Audit one refused request (its line is written before the answer; fsync'd off the loop under
        ``audit.fsync: always``) and log it; its request id."""
        request_id = new_request_id()
        status = REFUSALS[reason][0]
        if self.audit is not None:
            try:
                fd = self.audit.reserve()
                try:
                    self.audit.write(fd=fd, request_id=request_id, principal=None,
                                     method=method_name(method) if method else None,
                                     endpoint=route_name(path, self.routes) if path else "unknown", status=status,
                                     reason=reason, latency_ms=1000 * (loop.time() - started))
                except BaseException:
                    os.close(fd)
                    raise
                if self.fsync == "always":
                    loop.run_in_executor(None, _sync_and_close, fd)
                else:
                    os.close(fd)
            except OSError as exc:
                self.note(loop, "audit_unavailable", "audit log %s cannot be written (%s): a refusal at the "
                          "connection layer has no line", self.audit.path, type(exc).__name__)
        self.note(loop, reason, "refused a request before the service saw it: %s (%d)", reason, status)
        return request_id

    def note(self, loop, key: str, message: str, *args) -> None:
        """Log ``message`` now unless a line of the same ``key`` went out in the last minute (then count it)."""
        now = loop.time()
        if now - self._logged_at.get(key, float("-inf")) < LOG_EVERY_S:
            self._held[key] += 1
            return
        held = self._held.pop(key, 0)
        self._logged_at[key] = now
        logger.warning(message + ("; %d more since the last such line" if held else ""),
                       *args, *((held,) if held else ()))


def _sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def client_address(transport) -> str | None:
    """The peer's IP address; None for a Unix socket (a worker's own services talking to each other)."""
    peer = transport.get_extra_info("peername")
    return peer[0] if isinstance(peer, tuple) and peer else None


class _Refused(Exception):
    """Raised in a parser callback to stop parsing; the reason is in ``_pending``."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol under ``limits`` and ``guard`` (bound by ``guarded_protocol``)."""

    limits: ConnectionsConfig = ConnectionsConfig()
    guard: ConnectionGuard = ConnectionGuard(ConnectionsConfig())

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._accepted_at = self.loop.time()  # at accept, before any TLS handshake: one deadline covers both
        self.limit_concurrency = None  # replaced by the connection table and the check in on_headers_complete
        self._refusal: str | None = None
        self._pending: str | None = None
        self._head_timer = None

    # connection life and admission

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        now = self.loop.time()
        self._wait: tuple[int, float] | None = (FRESH, now)
        self._in_head, self._between, self._message_seq = False, True, 0
        self._head_bytes = self._raw_head_bytes = self._header_count = 0
        self._head_started = now
        remaining = self.limits.head_timeout_s - (now - self._accepted_at)
        self._head_timer = self.loop.call_later(max(remaining, 0.0), self._head_timed_out)
        admission = self.guard.table.admit(self, client_address(transport))
        for victim in admission.evict:
            victim.make_room()
        if admission.refuse:
            self._refuse_now(admission.refuse)

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        self.guard.table.remove(self)
        super().connection_lost(exc)

    def waiting(self) -> tuple[int, float] | None:
        """For the connection table: (kind, since) while no request is in flight on this connection."""
        return self._wait

    def make_room(self) -> None:
        """Closed by the table for a newcomer: quietly if nothing of a request had arrived, else 503 and audited."""
        if self._wait is not None and self._wait[0] == PARTIAL_HEAD:
            self._refuse_now("connection_limit")
            return
        self._close_quietly()
        self.guard.note(self.loop, "idle_closed", "closed idle connections to make room for new ones "
                        "(connections.max_concurrency / max_per_client reached)")

    # parsing

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused or closing: what the client still sends is dropped
        self._unset_keepalive_if_required()
        # the message whose head this whole chunk belongs to, if it belongs to one head alone
        open_message = self._message_seq if self._in_head else self._message_seq + 1 if self._between else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # websockets are off ("ws": "none"): the request was served as plain HTTP
        except httptools.HttpParserError:  # also what a callback's _Refused becomes
            self._refuse_now(self._pending or "malformed_request")
            return
        if self._in_head and self._message_seq == open_message and self._refusal is None:
            # a chunk that ends inside the head it began in: all of it is head, parsed into callbacks or not
            self._raw_head_bytes += len(data)
            if max(self._head_bytes, self._raw_head_bytes) > self.limits.max_head_bytes:
                self._refuse_now("head_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_seq += 1
        self._in_head, self._between = True, False
        self._head_bytes = self._raw_head_bytes = self._header_count = 0
        self._head_started = self.loop.time()
        if self._wait is not None:  # not pipelined behind a request in flight
            self._wait = (PARTIAL_HEAD, self._wait[1])
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_bytes += len(url)
        if len(self.url) > self.limits.max_head_bytes:
            self._refuse("url_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._refuse("too_many_headers")
        if self._head_bytes > self.limits.max_head_bytes:
            self._refuse("head_too_large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._wait = None  # a request in flight: never closed to make room
        self._cancel_head_timer()
        starts_now = self.cycle is None or self.cycle.response_complete  # not queued behind a pipelined one
        if starts_now and len(self.tasks) >= self.limits.max_concurrency:
            self._refuse("server_busy")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._between = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._refusal is None and not self.transport.is_closing():
            busy = self.cycle is not None and not self.cycle.response_complete  # a pipelined request started
            self._wait = None if busy else (IDLE, self.loop.time())

    # deadlines and refusals

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refusal is not None or self.transport.is_closing():
            return
        if self._in_head:
            self._refuse_now("head_timeout")
        elif self._wait is not None and self._wait[0] == FRESH:
            self._close_quietly()  # nothing was sent: no request to refuse or audit

    def _refuse(self, reason: str) -> None:
        self._pending = reason
        raise _Refused(reason)

    def _refuse_now(self, reason: str) -> None:
        began = getattr(self, "url", b"")  # uvicorn sets it when a request begins
        method = self.parser.get_method().decode("latin-1") if began else None  # known once the URL began
        path = self.scope.get("path") if self.scope else None
        request_id = self.guard.record(self.loop, reason, method, path, self._head_started)
        self._stop_reading(reason)
        if self.cycle is not None and not self.cycle.response_complete:
            # a response to an earlier request on this connection is on its way: it goes out, then the connection
            # closes (writing the refusal now would interleave the two)
            self.cycle.keep_alive = False
            return
        self.transport.write(refusal_response(reason, request_id))
        if self.transport.can_write_eof():
            # the answer, then FIN; what the client still sends is read and dropped, since closing with unread
            # data would reset the connection before the client read the answer
            self.transport.write_eof()
        else:
            self.transport.close()
        # a TLS close waits for the peer's close_notify (30 s): a refused client gets a moment, then it is dropped
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

    def _close_quietly(self) -> None:
        self._stop_reading("closed")
        self.transport.close()
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

    def _stop_reading(self, reason: str) -> None:
        self._refusal = reason
        self._cancel_head_timer()
        self.guard.table.remove(self)
        self.connections.discard(self)  # the slot is free now, not when the peer has gone


def guarded_protocol(limits: ConnectionsConfig, guard: ConnectionGuard | None = None) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits`` and one worker's ``guard``."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,),
                {"limits": limits, "guard": guard or ConnectionGuard(limits)})


def uvicorn_options(limits: ConnectionsConfig, tls: bool, guard: ConnectionGuard | None = None) -> dict:
    """What a Stillhouse worker passes to ``uvicorn.Config`` on top of BentoML's arguments."""
    options = {"http": guarded_protocol(limits, guard), "ws": "none", "timeout_keep_alive": limits.keep_alive_s,
               "limit_concurrency": None, "server_header": False}  # the protocol enforces max_concurrency
    if tls:
        options["ssl_context_factory"] = tls_context
    return options
