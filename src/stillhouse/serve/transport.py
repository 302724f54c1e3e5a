"""The connection layer of a served student: HTTP/1.1 head limits and timeouts, and the TLS policy.

BentoML runs each worker as one uvicorn server on one event loop, with uvicorn's httptools protocol, which
limits nothing about a request's head: httptools accumulates a header by concatenation, so one 64 MB header
took seconds of the loop's time, during which every other client of the worker waited; and a connection that
never sends a head is never closed. :func:`guarded_protocol` adds, before anything is parsed further:

- a bound on the bytes of a request head (``connections.max_head_bytes``, 431; a longer URL alone is 414) and on
  its header count (``connections.max_headers``, 431), counted as bytes arrive, so a big head costs one chunk;
- a head deadline (``connections.head_timeout_s``) from the moment a connection opens, and from the first byte
  of each next request on a kept-alive one: idle and slow-loris connections are closed.

TLS (``tls_context``): TLS 1.2 or 1.3 only, and for TLS 1.2 only ECDHE key exchange with AEAD ciphers
(Mozilla's "intermediate" profile); uvicorn's default cipher string ``TLSv1`` offered TLS 1.2 clients nothing but
CBC suites with SHA-1 MACs, so modern AEAD-only clients were refused.
"""

from __future__ import annotations

import json
import ssl

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from stillhouse.serve.config import ConnectionsConfig

# Mozilla server-side TLS guidelines, intermediate configuration (v5.7), forward secrecy and AEAD only, without its
# DHE suites: a server offers those only with DH parameters loaded, which Python's ssl does not do by default (they
# were listed here and never negotiated), and every client that has AEAD suites has ECDHE too.
TLS12_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
])
CLOSE_GRACE_S = 0.2
_REFUSALS = {
    414: ("the request URL is too long", "send a shorter URL"),
    431: ("the request head (request line and headers) is too large", "send fewer or shorter headers"),
    408: ("the request head did not arrive in time", "send the whole request head at once"),
}


def tls_context(config, default_factory) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: its context (certificate, key, client CAs) with Stillhouse's policy."""
    context = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD and are not affected by this list
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return context


class _HeadRefused(Exception):
    """Raised in a parser callback; httptools wraps it, uvicorn answers through ``send_400_response``."""


def refusal_response(status: int) -> bytes:
    problem, fix = _REFUSALS[status]
    body = json.dumps({"error": problem, "fix": fix}).encode()
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: " + str(len(body)).encode() + b"\r\n", b"connection: close\r\n\r\n", body])


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the head limits and deadline of ``limits`` (set by ``guarded_protocol``)."""

    limits: ConnectionsConfig = ConnectionsConfig()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._refusal: int | None = None
        self._head_open, self._head_bytes, self._header_count = True, 0, 0
        self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_open and not self.transport.is_closing():
            self._send_refusal(408)

    def _send_refusal(self, status: int) -> None:
        self._refusal = status
        self.transport.write(refusal_response(status))
        self.transport.close()
        # A TLS close waits for the peer's close_notify (30 s), reading and decrypting all it still sends: a
        # refused client gets a moment for the answer to leave, then the connection is dropped.
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

    def _refuse(self, status: int) -> None:
        self._refusal = status
        raise _HeadRefused(status)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is None:
            return super().send_400_response(msg)
        self._send_refusal(self._refusal)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        super().data_received(data)
        if self._head_open and self._refusal is None and not self.transport.is_closing():
            # counted after parsing: a chunk that completes a head is not held against it (its body is not head)
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_head_bytes:
                self._send_refusal(431)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._header_count = True, 0
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.max_head_bytes:
            self._refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refuse(431)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open, self._head_bytes = False, 0
        self._cancel_head_timer()
        super().on_headers_complete()


def guarded_protocol(limits: ConnectionsConfig) -> type[GuardedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits``."""
    return type("GuardedHttpProtocol", (GuardedHttpProtocol,), {"limits": limits})


def uvicorn_options(limits: ConnectionsConfig, tls: bool) -> dict:
    """What a Stillhouse worker passes to ``uvicorn.Config`` on top of BentoML's arguments."""
    options = {"http": guarded_protocol(limits), "ws": "none", "timeout_keep_alive": limits.keep_alive_s,
               "limit_concurrency": limits.max_concurrency, "server_header": False}
    if tls:
        options["ssl_context_factory"] = tls_context
    return options
