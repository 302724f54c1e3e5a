"""The connection layer of a served student: connection limits, HTTP/1.1 head limits and deadlines, and the TLS
policy, in front of the middleware.

BentoML runs each worker as one uvicorn server on one event loop, with uvicorn's httptools protocol, which limits
nothing about a request's head (httptools accumulates a header by concatenation: one 64 MB header took seconds of
the loop's time), never closes a connection that sends nothing, and counts idle connections against its
concurrency limit (about 1,100 idle connections locked every other client out). :class:`GuardedHttpProtocol`:

- admits each connection through the worker's :class:`~stillhouse.serve.connections.ConnectionTable`
  (per-address and per-worker caps; at a cap a waiting connection makes room) and refuses requests past
  ``max_concurrency`` in flight (503);
- bounds a request head (``connections.max_head_bytes``, 431; a longer URL alone is 414) and its header count
  (``connections.max_headers``, 431), counted per request as bytes arrive and as the parser reports the URL and
  each header, so a big head costs at most one read, whether it arrives in many reads or in one;
- gives every head a deadline (``connections.head_timeout_s``) from the moment the connection was accepted (a TLS
  handshake included: ``tls_handshake_deadline``) or from the first byte that follows a response on a kept-alive
  one: idle, trickling and stray-byte connections are closed;
- closes a connection once a response has gone out while its request's body had not all arrived (a client
  refused early, e.g. 401, cannot keep the parser busy with the rest), and after an upgrade request (the parser
  stops at an upgrade, so what follows would otherwise be read as new requests: request smuggling); allows at
  most ``MAX_PIPELINED`` requests queued behind the one in flight (each holds memory until it runs); drops a
  connection whose client has read none of its answers for ``head_timeout_s`` (a request in flight is not
  closed for room, so a client that never reads must not hold one for ever);
- answers a refused request (a connection refused at a limit included) with JSON naming the problem and the
  fix, audited and logged (:mod:`stillhouse.serve.refusals`). A connection closed having sent nothing (at the
  head deadline, or to make room) was told nothing and carried no request: it is logged once a minute, not
  audited, so an idle flood cannot write the audit log full.

TLS (``tls_context``): TLS 1.2 or 1.3 only, and for TLS 1.2 only ECDHE key exchange with AEAD ciphers
(Mozilla's "intermediate" profile); uvicorn's default cipher string ``TLSv1`` offered TLS 1.2 clients nothing but
CBC suites with SHA-1 MACs, so modern AEAD-only clients were refused.
"""

from __future__ import annotations

import contextlib
import ssl
from collections import deque

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from stillhouse.serve.config import ConnectionsConfig
from stillhouse.serve.connections import FRESH, IDLE, PARTIAL_HEAD
from stillhouse.serve.refusals import ConnectionGuard, refusal_response

# Mozilla server-side TLS guidelines, intermediate configuration (v5.7), forward secrecy and AEAD only, without its
# DHE suites: a server offers those only with DH parameters loaded, which Python's ssl does not do by default (they
# were listed here and never negotiated), and every client that has AEAD suites has ECDHE too.
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
CLOSE_GRACE_S = 0.2
TLS_SHUTDOWN_S = 1.0  # a closing TLS connection waits this long for the peer's close_notify (asyncio: 30 s)
MAX_PIPELINED = 64  # requests queued behind the one in flight on one connection (browsers pipeline none)


def tls_context(config, default_factory) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: its context (certificate, key, client CAs) with Stillhouse's policy."""
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD and are not affected by this list
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return context


@contextlib.contextmanager
def tls_handshake_deadline(loop, seconds: float):
    """Within the block, TLS servers created on ``loop`` give a handshake ``seconds`` and a closing connection
    ``TLS_SHUTDOWN_S`` (asyncio's defaults, 60 s and 30 s, held a connection that never started a handshake for a
    minute); uvicorn passes neither. Servers without TLS are created as before."""
    create_server = loop.create_server

    async def with_deadlines(*args, **kwargs):
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", seconds)
            kwargs.setdefault("ssl_shutdown_timeout", TLS_SHUTDOWN_S)
        return await create_server(*args, **kwargs)

    loop.create_server = with_deadlines
    try:
        yield
    finally:
        del loop.create_server  # the loop's own method again


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
        self._closed_by_us: str | None = None  # why this connection reads no more: a reason code, or "closed"
        self._pending: str | None = None
        self._head_timer = self._write_timer = None
        self._kind: int | None = FRESH  # the connection table's waiting kind; None while a request is in flight
        self._running = None  # the request cycle whose handler runs (uvicorn's `cycle` is the newest one parsed)
        self._method: str | None = None  # of the request being read, for its audit line if it is refused
        self._path: str | None = None

    # connection life and admission

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        now = self.loop.time()
        self._in_head, self._between, self._message_seq, self._drain_after_response = False, True, 0, False
        self._head_bytes = self._raw_head_bytes = self._header_count = 0
        self._head_started = now
        remaining = self.limits.head_timeout_s - (now - self._accepted_at)
        self._head_timer = self.loop.call_later(max(remaining, 0.0), self._head_timed_out)
        admission = self.guard.table.admit(self, client_address(transport), now)
        for victim in admission.evict:
            victim.make_room()
        if admission.refuse:
            # answered at once, before its head arrives, and audited like any refused request
            self._refuse_now(admission.refuse)

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
        self.guard.table.remove(self)
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:  # the client reads nothing of what it is sent
            self._write_timer = self.loop.call_later(self.limits.head_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_stalled(self) -> None:
        self._write_timer = None
        self.guard.note(self.loop, "write_stalled", "dropped connections whose client read none of its answers "
                        "for %g s", self.limits.head_timeout_s)
        self.transport.abort()

    def _start_asgi_task(self, cycle, app) -> None:
        self._running = cycle
        super()._start_asgi_task(cycle, app)

    def make_room(self) -> None:
        """Closed by the table for a newcomer: quietly if nothing of a request had arrived, else 503 and audited."""
        if self._kind == PARTIAL_HEAD:
            self._refuse_now("connection_limit")
            return
        self._stop_reading("closed")
        self._close_after_grace()
        self.guard.note(self.loop, "idle_closed", "closed idle connections to make room for new ones "
                        "(connections.max_concurrency / max_per_client reached)")

    def _set_kind(self, kind: int | None) -> None:
        self._kind = kind
        if kind is None:
            self.guard.table.busy(self)
        else:
            self.guard.table.waiting(self, kind, self.loop.time())

    # parsing

    def data_received(self, data: bytes) -> None:
        if self._closed_by_us is not None or self._drain_after_response:
            return  # refused, closing, or past an upgrade: what the client still sends is dropped
        self._unset_keepalive_if_required()
        if self._head_timer is None and self._kind is not None:
            # bytes while waiting (a next request, or stray bytes that begin none): the head deadline runs
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)
        # the message whose head this whole chunk belongs to, if it belongs to one head alone
        open_message = self._message_seq if self._in_head else self._message_seq + 1 if self._between else None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # marked in on_headers_complete: the request is served, the connection closes after it
        except httptools.HttpParserError:  # also what a callback's _Refused becomes
            self._refuse_now(self._pending or "malformed_request")
            return
        if self._in_head and self._message_seq == open_message and self._closed_by_us is None:
            # a chunk that ends inside the head it began in: all of it is head, parsed into callbacks or not
            self._raw_head_bytes += len(data)
            if max(self._head_bytes, self._raw_head_bytes) > self.limits.max_head_bytes:
                self._refuse_now("head_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._message_seq += 1
        self._in_head, self._between = True, False
        self._head_bytes = self._raw_head_bytes = self._header_count = 0
        self._head_started, self._method, self._path = self.loop.time(), None, None
        if self._kind is not None:  # not pipelined behind a request in flight
            self._set_kind(PARTIAL_HEAD)
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if self._method is None:  # the request line's method is parsed by now
            self._method = self.parser.get_method().decode("latin-1")
        self._head_bytes += len(url)
        if len(self.url) > self.limits.max_head_bytes:
            self._refuse("url_too_long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # also a chunked body's trailers, counted with their head: the request is refused either way
        self._header_count += 1
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            self._refuse("too_many_headers")
        if self._head_bytes > self.limits.max_head_bytes:
            self._refuse("head_too_large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        starts_now = self.cycle is None or self.cycle.response_complete  # not queued behind a pipelined one
        if starts_now and len(self.tasks) >= self.limits.max_concurrency:
            self._refuse("server_busy")
        if not starts_now and len(self.pipeline) >= MAX_PIPELINED:
            self._refuse("too_many_pipelined")
        self._set_kind(None)  # a request in flight: never closed to make room
        super().on_headers_complete()
        self._path = self.scope.get("path")
        if self.parser.should_upgrade():
            # llhttp stops at an upgrade and would read what follows as new requests: serve this one, then close
            self._drain_after_response = True
            self.cycle.keep_alive = False

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._between = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._head_started, self._method, self._path = self.loop.time(), None, None  # the next request's
        if self.transport.is_closing():  # `Connection: close`, HTTP/1.0, an upgrade, a refusal: the slot is free
            self._stop_reading(self._closed_by_us or "closed")  # (a TLS close waits up to TLS_SHUTDOWN_S more)
            # what the client has not read yet is dropped after the write deadline
            self.loop.call_later(self.limits.head_timeout_s, self.transport.abort)
        elif self._closed_by_us is not None or not self.cycle.response_complete:
            pass  # reading stopped, or a pipelined request has started (the one answered had all arrived): busy
        elif self.cycle.more_body:
            # answered before its body had all arrived (a 401, 413, 415, 411 ...): the rest is not parsed
            self._stop_reading("closed")
            self._answer_and_close(b"")
        else:
            self._set_kind(PARTIAL_HEAD if self._in_head else IDLE)

    # deadlines and refusals

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._closed_by_us is not None or self.transport.is_closing():
            return
        if self._in_head:
            self._refuse_now("head_timeout")
        elif self._kind is not None:  # sent nothing, or stray bytes that began no request: nothing to refuse
            self._stop_reading("closed")
            self._close_after_grace()

    def _refuse(self, reason: str) -> None:
        self._pending = reason
        raise _Refused(reason)

    def _refuse_now(self, reason: str) -> None:
        """Refuse the request being read: audit and log it, answer it, close the connection."""
        request_id = self.guard.record(self.loop, reason, self._method, self._path, self._head_started)
        running = self._running if self._running is not None and not self._running.response_complete else None
        if running is None:
            self._stop_reading(reason)
            self._answer_and_close(refusal_response(reason, request_id))
            return
        # a handler runs: the connection keeps its slot (and its client's count) until it is gone
        self._stop_reading(reason, free_slot=False)
        if running is self.cycle and running.more_body:
            # the refused bytes are the running request's body: it cannot complete, so its handler is told the
            # client went away (its answer is dropped) and the refusal is the answer, if none began
            running.disconnected = True
            running.message_event.set()
            self._answer_and_close(b"" if running.response_started else refusal_response(reason, request_id))
        else:
            # the refused request came after the running one: its answer, and those of requests queued behind it
            # whole, go out first, then the connection closes (writing the refusal now would interleave them)
            last = self.cycle
            if last is not running and last.more_body:  # queued with its body cut off: it cannot complete
                self.pipeline = deque(item for item in self.pipeline if item[0] is not last)
                last = self.pipeline[0][0] if self.pipeline else running  # uvicorn queues with appendleft
            last.keep_alive = False

    def _answer_and_close(self, answer: bytes) -> None:
        if answer:
            self.transport.write(answer)
        if self.transport.can_write_eof():
            # the answer, then FIN; what the client still sends is read and dropped, since closing with unread
            # data would reset the connection before the client read the answer
            self.transport.write_eof()
        else:
            self.transport.close()
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

    def _close_after_grace(self) -> None:
        self.transport.close()
        # a TLS close waits for the peer's close_notify: a client gets a moment, then the connection is dropped
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

    def _stop_reading(self, reason: str, free_slot: bool = True) -> None:
        self._closed_by_us = reason
        self._cancel_head_timer()
        if free_slot:  # the slot is free now, not when the peer has gone
            self.guard.table.remove(self)
            self.connections.discard(self)


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
