"""What the connection layer answers, audits and logs when it refuses a request before the middleware sees it.

Each refusal has a fixed reason code (the audit log's ``reason``), a status, and a message naming the problem and
the fix; the answer carries the request's ``X-Request-ID`` and its audit line is written before it leaves (never a
byte of what the client sent). The server log gets each kind at most once a minute, with the count since its last
line, so that a flood cannot flood the log. Under ``audit.fsync: always`` the lines are fsync'd off the event
loop, one fsync at a time for however many lines arrived meanwhile (a flood of refusals queues no descriptors).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from stillhouse.serve.audit import REQUEST_ID_HEADER, AuditLog, method_name, new_request_id, route_name
from stillhouse.serve.config import ConnectionsConfig
from stillhouse.serve.connections import ConnectionTable

LOG_EVERY_S = 60.0
# reason code: (status, problem, fix)
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
    "too_many_pipelined": (503, "too many requests were sent on one connection ahead of their answers",
                           "wait for answers, or spread requests over several connections"),
}
_RETRY_AFTER = {503: b"retry-after: 1\r\n"}
logger = logging.getLogger("stillhouse.serving")


def refusal_response(reason: str, request_id: str | None) -> bytes:
    """The whole HTTP/1.1 answer to a refused request (JSON ``error`` and ``fix``; the connection closes)."""
    status, problem, fix = REFUSALS[reason]
    body = json.dumps({"error": problem, "fix": fix}).encode()
    request_id_line = REQUEST_ID_HEADER.encode() + b": " + request_id.encode() + b"\r\n" if request_id else b""
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: " + str(len(body)).encode() + b"\r\n", _RETRY_AFTER.get(status, b""),
                     request_id_line, b"connection: close\r\n\r\n", body])


class ConnectionGuard:
    """One worker's connection table, and the audit and log of what its connection layer refuses."""

    def __init__(self, limits: ConnectionsConfig, audit: AuditLog | None = None, fsync: str = "changes",
                 routes: frozenset[str] = frozenset()):
        self.table = ConnectionTable(limits.max_concurrency, limits.max_per_client)
        self.audit, self.fsync, self.routes = audit, fsync, routes
        self._logged_at: dict[str, float] = {}
        self._held: Counter = Counter()
        self._sync_lock = threading.Lock()
        self._sync_due = self._syncing = False

    def record(self, loop, reason: str, method: str | None, path: str | None, started: float) -> str:
        """Audit one refused request and log it; its request id."""
        request_id = new_request_id()
        status = REFUSALS[reason][0]
        if self.audit is not None:
            try:
                self.audit.write(request_id=request_id, principal=None,
                                 method=method_name(method) if method else None,
                                 endpoint=route_name(path, self.routes) if path else "unknown", status=status,
                                 reason=reason, latency_ms=1000 * (loop.time() - started))
                if self.fsync == "always":
                    self._request_sync(loop)
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

    def _request_sync(self, loop) -> None:
        with self._sync_lock:
            self._sync_due = True
            if self._syncing:
                return  # the running fsync loop takes this line too
            self._syncing = True
        loop.run_in_executor(None, self._sync_until_clean)

    def _sync_until_clean(self) -> None:
        while True:
            with self._sync_lock:
                if not self._sync_due:
                    self._syncing = False
                    return
                self._sync_due = False
            try:
                fd = self.audit.reserve()
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass  # the next write finds the log unwritable and says so
