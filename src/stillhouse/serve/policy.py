"""The request policy of every Stillhouse service: what is checked, in which order, and how each refusal reads.

``serving/middleware.py`` is its ASGI adapter: it moves bytes and messages, and asks :class:`Admission` and
:class:`RequestPolicy` at each step. Per HTTP request, in this order: a server-generated request id (a plain client
``X-Request-ID`` is kept only as ``client_request_id``); the audit log opened (503 if it cannot be: no request is
served unaudited; ``/readyz`` is 503 then too); headers that must appear once (400 if repeated); the bearer token
(401 without detail; probe paths stay open); a slot among the principal's ``limits.max_requests_per_principal``
requests in flight (429); a body only with a Content-Length (411 for chunked) and none on open paths (413) — these
are :meth:`Admission.admit`; the body, read by the adapter up to ``limits.max_body_bytes`` within
``limits.body_timeout_s`` (413, 408, 400 when cut off); for the service's checked routes the content type (415) and
the route's check (422 naming the problem, never quoting the input) — :meth:`RequestPolicy.check_body`; then the
service, given the checked object as canonical JSON (:func:`forwarded`). A route the service does not have is not
checked here: the service answers 404.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable

from stillhouse.errors import RequestError
from stillhouse.serve.audit import REQUEST_ID_HEADER, AuditLog, new_request_id
from stillhouse.serve.config import LimitsConfig, ServeConfig
from stillhouse.serve.schemas import (
    FEEDBACK_ROUTE,
    FRAMEWORK_ROUTES,
    STATE_CHANGING,
    CheckedRequest,
    check_content_type,
    check_idempotency_key,
)

PRINCIPAL_HEADER = "x-stillhouse-principal"
IDEMPOTENCY_HEADER = "idempotency-key"
READINESS_PATH = "/readyz"
# Headers only the middleware sets; client-sent copies never reach the service.
INTERNAL_HEADERS = {REQUEST_ID_HEADER.encode(), PRINCIPAL_HEADER.encode()}
# Headers whose second copy would let a parser pick another value than the one checked here.
SINGLE_HEADERS = (b"authorization", b"content-type", b"content-length", b"content-encoding", b"transfer-encoding",
                  b"host", IDEMPOTENCY_HEADER.encode(), REQUEST_ID_HEADER.encode())
logger = logging.getLogger("stillhouse.serving")

# The route a service answers beside /feedback, set by `stillhouse serve` for the workers' connection layer (which
# names refused requests' routes in the audit before any service is loaded).
ROUTE_ENV = "STILLHOUSE_SERVE_ROUTE"

Check = Callable[[bytes, LimitsConfig], CheckedRequest]
Headers = list[tuple[bytes, bytes]]


class Refusal(Exception):
    """A request refused here: the status, a fixed ``reason`` code for the audit, and the client's message."""

    def __init__(self, status: int, reason: str, problem: str, fix: str | None = None, headers=()):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, list(headers)
        self.payload = {"error": problem, **({"fix": fix} if fix else {})}

    def body(self) -> bytes:
        return json.dumps(self.payload).encode()


def audit_unavailable(fix: str = "retry later; operators: check the audit log's path, permissions and disk") -> Refusal:
    return Refusal(503, "audit_unavailable", "the service cannot write its audit log", fix)


def header(headers: Headers, name: bytes) -> str | None:
    """The first value of header ``name`` (``headers`` lower-cased), decoded as latin-1."""
    values = [v for k, v in headers if k == name]
    return values[0].decode("latin-1") if values else None


def refuse_repeated_headers(headers: Headers) -> None:
    names = [k for k, _ in headers]
    if any(names.count(name) > 1 for name in SINGLE_HEADERS):
        raise Refusal(400, "repeated_header", "a header that may appear once was sent more than once",
                      "send Authorization, Content-Type, Content-Length, Idempotency-Key and X-Request-ID once")


def body_length(limits: LimitsConfig, headers: Headers, open_path: bool) -> int:
    """The declared length of a body the service may read: no chunked bodies, none on open paths, none over
    ``limits.max_body_bytes``."""
    if header(headers, b"transfer-encoding") is not None:
        # chunk extensions and trailers are accumulated by the parser without a bound the head limits apply
        raise Refusal(411, "length_required", "a request body must come with a Content-Length",
                      "send the body with a Content-Length header (chunked transfer encoding is not accepted)")
    declared = header(headers, b"content-length") or "0"
    if open_path and declared != "0":
        # probes need no token: a body they would wait for could hold connections without any credential
        raise Refusal(413, "body_too_large", "probe and open paths take no body", "send probes without a body")
    if not declared.isdigit() or int(declared) > limits.max_body_bytes:
        raise body_too_large(limits)
    return int(declared)


def body_too_large(limits: LimitsConfig) -> Refusal:
    return Refusal(413, "body_too_large", f"request body over {limits.max_body_bytes:,} bytes",
                   "send fewer or shorter texts per request")


def body_incomplete() -> Refusal:
    """The client went away before its body had all arrived: nothing is served from part of a body (a prefix
    can be valid JSON)."""
    return Refusal(400, "body_incomplete", "the connection closed before the whole body arrived", "send the whole body")


def body_timeout(limits: LimitsConfig) -> Refusal:
    return Refusal(408, "body_timeout", f"the body did not arrive within {limits.body_timeout_s:g} s",
                   "send the whole body at once")


def forwarded(headers: Headers, body: bytes, checked: CheckedRequest | None, request_id: str,
              principal: str | None) -> tuple[Headers, bytes]:
    """What the service is given: the checked object as canonical JSON (it parses exactly what was checked, not
    the client's bytes: no parser differentials), and the request id and principal set here and nowhere else."""
    headers = [(k, v) for k, v in headers if k not in INTERNAL_HEADERS]
    if checked is not None:
        body = json.dumps(checked.payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = [(k, v) for k, v in headers if k not in (b"content-length", b"content-type")]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(REQUEST_ID_HEADER.encode(), request_id.encode()), (PRINCIPAL_HEADER.encode(), (principal or "").encode())]
    return headers, body


def service_routes(routes, config: ServeConfig) -> frozenset[str]:
    """The audit's ``endpoint`` vocabulary of a service answering ``routes`` (and /feedback): those, BentoML's
    probes, metrics and docs, and the open paths. A client's URL never reaches the log: any other path is
    ``unknown``."""
    return frozenset(routes) | {FEEDBACK_ROUTE} | FRAMEWORK_ROUTES | frozenset(config.auth.open_paths)


class PrincipalSlots:
    """Requests in flight per principal, at most ``cap`` each (429 beyond)."""

    def __init__(self, cap: int):
        self.cap, self.in_flight = cap, Counter()

    def take(self, principal: str) -> None:
        if self.in_flight[principal] >= self.cap:
            raise Refusal(429, "principal_concurrency_limit", f"this token already has {self.cap} requests in flight",
                          "wait for answers before sending more; operators: limits.max_requests_per_principal",
                          headers=[(b"retry-after", b"1")])
        self.in_flight[principal] += 1

    def release(self, principal: str) -> None:
        self.in_flight[principal] -= 1
        if not self.in_flight[principal]:
            del self.in_flight[principal]


class AuditHealth:
    """Whether requests can be audited: the log opens for each request, a failure refuses it (and is said once a
    minute, so refused clients cannot flood the log instead), and readiness fails until a line can be written."""

    def __init__(self, audit: AuditLog):
        self.audit, self.failing, self.alarm_at = audit, False, float("-inf")

    def open(self) -> int:
        """A descriptor for this request's audit line, or the 503 refusal."""
        try:
            return self.audit.reserve()
        except OSError as exc:
            self.failing = True
            now = time.monotonic()
            if now - self.alarm_at > 60:
                self.alarm_at = now
                logger.error("audit log %s cannot be opened (%s): refusing requests", self.audit.path,
                             type(exc).__name__)
            raise audit_unavailable() from None

    def ready(self) -> bool:
        """For ``/readyz``: the log opens, and after a failed write a line can be written again (one line,
        ``reason: audit_recovered``; probes leave none otherwise). An orchestrator then takes a worker whose every
        request would be refused out of rotation, and puts it back once the disk or permissions are fixed."""
        try:
            fd = self.audit.reserve()
        except OSError:
            return False
        try:
            if self.failing:
                self.audit.write(fd=fd, request_id=new_request_id(), principal=None, method="GET",
                                 endpoint=READINESS_PATH, status=200, reason="audit_recovered", latency_ms=0.0)
                self.failing = False
            return True
        except OSError:
            return False
        finally:
            os.close(fd)


class RequestPolicy:
    """The policy of one service: its routes and their checks (``checks``: route → check; the routes the service
    answers besides BentoML's own), its tokens, its limits."""

    def __init__(self, config: ServeConfig, checks: dict[str, Check]):
        self.config, self.checks = config, dict(checks)
        self.tokens = config.auth.token_table() if config.auth.enabled else None
        self.routes = service_routes(self.checks, config)
        self.slots = PrincipalSlots(config.limits.max_requests_per_principal)

    def is_open(self, path: str) -> bool:
        return path in self.config.auth.open_paths

    def authenticate(self, headers: Headers) -> str | None:
        """The principal of the bearer token (None with auth off), or the 401 refusal (no detail)."""
        if self.tokens is None:
            return None
        scheme, _, token = (header(headers, b"authorization") or "").partition(" ")
        principal = self.tokens.principal(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise Refusal(401, "unauthorized", "unauthorized", headers=[(b"www-authenticate", b"Bearer")])
        return principal

    def check_body(self, path: str, method: str, headers: Headers, body: bytes) -> CheckedRequest | None:
        """The checked request of a POST to one of the service's checked routes (None for any other request)."""
        check = self.checks.get(path) if method == "POST" else None
        if check is None:
            return None
        try:
            check_content_type(header(headers, b"content-type"), header(headers, b"content-encoding"))
        except RequestError as err:
            raise Refusal(415, "unsupported_media_type", err.problem, err.fix) from None
        try:
            if path in STATE_CHANGING:
                check_idempotency_key(header(headers, IDEMPOTENCY_HEADER.encode()))
            return check(body, self.config.limits)
        except RequestError as err:
            raise Refusal(422, "invalid_request", err.problem, err.fix) from None
        except Exception as exc:  # noqa: BLE001 - a body no check foresaw is still the client's problem, not a 500
            logger.warning("request check failed with %s", type(exc).__name__)
            raise Refusal(422, "unreadable_body", "the body could not be read",
                          "send a JSON object as described in the README's Serving section") from None

    def audit_sync(self, path: str, reason: str | None) -> bool:
        """Whether the request's audit line waits for an fsync: every line under ``audit.fsync: always``; under
        ``changes`` the lines of requests the service handled on routes that change state (a refusal changed
        nothing, and an fsync per 401 would let anyone queue disk flushes ahead of real work); never otherwise."""
        fsync = self.config.audit.fsync
        return fsync == "always" or (fsync == "changes" and path in STATE_CHANGING and reason is None)


class Admission:
    """One request's passage through the checks before its body, and what they granted it: the descriptor its
    audit line goes to (none on open paths: probes are not audited), its principal, one of that principal's slots.
    A refusal keeps what was granted so far, so that it is audited like any answer; :meth:`release` gives it back
    when the request ends, however it ends."""

    def __init__(self, policy: RequestPolicy, health: AuditHealth, path: str, headers: Headers):
        self.policy, self.health, self.path, self.headers = policy, health, path, headers
        self.open_path = policy.is_open(path)
        self.fd: int | None = None
        self.principal: str | None = None
        self.holds_slot = False

    def admit(self) -> int:
        """The declared length of the body to read, or the first check's :class:`Refusal`. The log opens first,
        so every refusal after it (401s included) leaves a line; a header that must appear once is checked before
        the token is read from it; the slot is taken before the body, so one token cannot hold more than its cap
        of connections trickling bodies."""
        if not self.open_path:
            self.fd = self.health.open()
        elif self.path == READINESS_PATH and not self.health.ready():
            raise audit_unavailable()
        refuse_repeated_headers(self.headers)
        if not self.open_path:
            self.principal = self.policy.authenticate(self.headers)
            if self.principal is not None:  # auth off: the connection layer's per-address cap applies
                self.policy.slots.take(self.principal)
                self.holds_slot = True
        return body_length(self.policy.config.limits, self.headers, self.open_path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.holds_slot:
            self.policy.slots.release(self.principal)
            self.holds_slot = False
