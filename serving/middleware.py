"""The security middleware of every Stillhouse service (pure ASGI, added with ``add_asgi_middleware``).

Per HTTP request, in this order: a server-generated request id (a plain client ``X-Request-ID`` is kept only as
``client_request_id``); headers that must appear once (400 if repeated); the audit log opened (503 if it cannot
be: no request is served unaudited; ``/readyz`` is 503 then too); the bearer token (401 without detail; probe paths
stay open); a slot among the principal's ``limits.max_requests_per_principal`` requests in flight (429); a body
only with a Content-Length (411 for chunked) and none on open paths (413); the body, read up to
``limits.max_body_bytes`` within ``limits.body_timeout_s`` (413, 408); for checked routes the content
type (415) and the route's check from ``stillhouse.serve.schemas.CHECKS`` (422 naming the problem, never quoting
the input); then the service, given the checked object as canonical JSON. The response is held until its audit
line is written (fsync'd per ``audit.fsync``); if that fails the client gets 503 instead. Any failure here or in
the service is answered (422 for a body that could not be read, 500 otherwise) and audited, never left to
BentoML. The service sees two headers set here and nowhere else (client-sent copies are dropped):
``x-request-id`` and ``x-stillhouse-principal``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter

from starlette.responses import JSONResponse

from stillhouse.errors import RequestError, Unavailable
from stillhouse.serve.audit import (CLIENT_REQUEST_ID_HEADER, REQUEST_ID_HEADER, AuditLog, client_request_id,
                                    method_name, new_request_id, output_summary, route_name)
from stillhouse.serve.config import ServeConfig
from stillhouse.serve.schemas import (CHECKS, SERVICE_ROUTES, STATE_CHANGING, check_content_type,
                                      check_idempotency_key)

PRINCIPAL_HEADER = "x-stillhouse-principal"
IDEMPOTENCY_HEADER = "idempotency-key"
READINESS_PATH = "/readyz"
_INTERNAL = {REQUEST_ID_HEADER.encode(), PRINCIPAL_HEADER.encode()}
# Headers whose second copy would let a parser pick another value than the one checked here.
_SINGLE = (b"authorization", b"content-type", b"content-length", b"content-encoding", b"transfer-encoding",
           b"host", IDEMPOTENCY_HEADER.encode(), REQUEST_ID_HEADER.encode())
_SUMMARY_MAX_BYTES = 4 << 20  # larger responses are audited without an output summary
logger = logging.getLogger("stillhouse.serving")


def principal_of(ctx) -> str | None:
    """The authenticated principal of the request a service method serves (None with auth off)."""
    return ctx.request.headers.get(PRINCIPAL_HEADER) or None


class BodyTooLarge(Exception):
    pass


class BodyIncomplete(Exception):
    """The client went away before its body had all arrived."""


def unprocessable(err: RequestError, ctx) -> JSONResponse:
    """The 422 answer of a service method to a request the middleware could not check (e.g. an unknown label)."""
    ctx.response.status_code = 422  # BentoML sets a returned response's status from the context
    return JSONResponse({"error": err.problem, "fix": err.fix}, status_code=422)


def unavailable(err: Unavailable, ctx) -> JSONResponse:
    """The 503 answer when the feedback database is down: the request was fine, so say when to send it again."""
    ctx.response.status_code = 503
    ctx.response.headers["Retry-After"] = "5"
    return JSONResponse({"error": err.problem, "fix": err.fix}, status_code=503, headers={"Retry-After": "5"})


async def remember_request(store, ctx, texts: list[str], model_tag: str) -> None:
    """Keep the request's texts so feedback can cite it (off the event loop: a write may wait on a lock). With the
    feedback database down the answer still goes out: predictions do not depend on it; feedback that cites this
    request will be refused as unknown, and the operator is warned (no request data in the line)."""
    try:
        await asyncio.to_thread(store.remember_request, principal_of(ctx),
                                ctx.request.headers.get(REQUEST_ID_HEADER, ""), texts, model_tag)
    except Unavailable:
        logger.warning("feedback database unreachable: a request was answered but not kept for feedback")


async def _read_body(receive, limit: int, declared: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            if size < declared:
                raise BodyIncomplete
            break
        size += len(message.get("body", b""))
        if size > limit:
            raise BodyTooLarge
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


class Refusal(Exception):
    """A request refused here: the status, a fixed ``reason`` code for the audit, and the client's message."""

    def __init__(self, status: int, reason: str, problem: str, fix: str | None = None, headers=()):
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, list(headers)
        self.payload = {"error": problem, **({"fix": fix} if fix else {})}


def audit_unavailable() -> Refusal:
    return Refusal(503, "audit_unavailable", "the service cannot write its audit log",
                   "retry later; operators: check the audit log's path, permissions and disk")


class SecurityMiddleware:
    def __init__(self, app, config: ServeConfig):
        self.app = app
        self.config = config
        self.tokens = config.auth.token_table() if config.auth.enabled else None
        self.audit = AuditLog.from_config(config.audit)
        self.routes = SERVICE_ROUTES | frozenset(config.auth.open_paths)
        self.audit_alarm_at = float("-inf")
        self.audit_failing = False  # a line could not be written; readiness checks the log until one can
        self.in_flight: Counter = Counter()  # requests in flight per principal

    def audit_ready(self) -> bool:
        """For ``/readyz``: the audit log opens, and after a failed write a line can be written again (one line,
        ``reason: audit_recovered``; probes leave none otherwise). An orchestrator then takes a worker whose every
        request would be refused out of rotation, and puts it back once the disk or permissions are fixed."""
        try:
            fd = self.audit.reserve()
        except OSError:
            return False
        try:
            if self.audit_failing:
                self.audit.write(fd=fd, request_id=new_request_id(), principal=None, method="GET",
                                 endpoint=READINESS_PATH, status=200, reason="audit_recovered", latency_ms=0.0)
                self.audit_failing = False
            return True
        except OSError:
            return False
        finally:
            os.close(fd)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            return await _Exchange(self, scope, receive, send).run()
        if scope["type"] == "websocket":  # no route of ours speaks it
            return await send({"type": "websocket.close", "code": 1008})
        return await self.app(scope, receive, send)


class _Exchange:
    """One request through the middleware (the state its steps share)."""

    def __init__(self, middleware: SecurityMiddleware, scope, receive, send):
        self.mw, self.config, self.scope, self.receive, self.send = middleware, middleware.config, scope, receive, send
        self.start = time.perf_counter()
        self.rid = new_request_id()
        self.headers = [(k.lower(), v) for k, v in scope["headers"]]
        self.client_id = client_request_id(self._header(REQUEST_ID_HEADER.encode()))
        self.path, self.method = scope["path"], scope["method"]
        self.open_path = self.path in self.config.auth.open_paths
        self.principal: str | None = None
        self.body = b""
        self.checked = None
        self.fd: int | None = None
        self.answered = False
        self.holds_slot = False

    def _header(self, name: bytes) -> str | None:
        values = [v for k, v in self.headers if k == name]
        return values[0].decode("latin-1") if values else None

    async def run(self) -> None:
        try:
            try:
                if not self.open_path:
                    self._open_audit()
                elif self.path == READINESS_PATH and not self.mw.audit_ready():
                    raise audit_unavailable()
                self._refuse_repeated_headers()
                if not self.open_path:
                    self._authenticate()
                    self._take_principal_slot()
                await self._read_and_check()
            except Refusal as refusal:
                return await self._answer_refusal(refusal)
            await self._dispatch()
        finally:
            if self.fd is not None:
                os.close(self.fd)
            if self.holds_slot:
                self.mw.in_flight[self.principal] -= 1
                if not self.mw.in_flight[self.principal]:
                    del self.mw.in_flight[self.principal]

    def _refuse_repeated_headers(self) -> None:
        names = [k for k, _ in self.headers]
        if any(names.count(name) > 1 for name in _SINGLE):
            raise Refusal(400, "repeated_header", "a header that may appear once was sent more than once",
                          "send Authorization, Content-Type, Content-Length, Idempotency-Key and X-Request-ID once")

    def _open_audit(self) -> None:
        try:
            self.fd = self.mw.audit.reserve()
        except OSError as exc:
            self.mw.audit_failing = True
            now = time.monotonic()
            if now - self.mw.audit_alarm_at > 60:  # once a minute: refused clients must not flood the log instead
                self.mw.audit_alarm_at = now
                logger.error("audit log %s cannot be opened (%s): refusing requests", self.mw.audit.path,
                             type(exc).__name__)
            raise audit_unavailable() from None

    def _authenticate(self) -> None:
        if self.mw.tokens is None:
            return
        scheme, _, token = (self._header(b"authorization") or "").partition(" ")
        self.principal = self.mw.tokens.principal(token.strip()) if scheme.lower() == "bearer" else None
        if self.principal is None:
            raise Refusal(401, "unauthorized", "unauthorized", headers=[(b"www-authenticate", b"Bearer")])

    def _take_principal_slot(self) -> None:
        """One of the principal's ``limits.max_requests_per_principal`` slots, held until the request ends."""
        if self.principal is None:  # auth off: the connection layer's per-address cap still applies
            return
        cap = self.config.limits.max_requests_per_principal
        if self.mw.in_flight[self.principal] >= cap:
            raise Refusal(429, "principal_concurrency_limit", f"this token already has {cap} requests in flight",
                          "wait for answers before sending more; operators: limits.max_requests_per_principal",
                          headers=[(b"retry-after", b"1")])
        self.mw.in_flight[self.principal] += 1
        self.holds_slot = True

    async def _read_and_check(self) -> None:
        limits = self.config.limits
        if self._header(b"transfer-encoding") is not None:
            # chunk extensions and trailers are accumulated by the parser without a bound the head limits apply
            raise Refusal(411, "length_required", "a request body must come with a Content-Length",
                          "send the body with a Content-Length header (chunked transfer encoding is not accepted)")
        declared = self._header(b"content-length") or "0"
        if self.open_path and declared != "0":
            # probes need no token: a body they would wait for could hold connections without any credential
            raise Refusal(413, "body_too_large", "probe and open paths take no body", "send probes without a body")
        too_large = Refusal(413, "body_too_large", f"request body over {limits.max_body_bytes:,} bytes",
                            "send fewer or shorter texts per request")
        if not declared.isdigit() or int(declared) > limits.max_body_bytes:
            raise too_large
        try:
            self.body = await asyncio.wait_for(_read_body(self.receive, limits.max_body_bytes, int(declared)),
                                               limits.body_timeout_s)
        except BodyTooLarge:
            raise too_large from None
        except BodyIncomplete:  # nothing is served from part of a body (a prefix can be valid JSON)
            raise Refusal(400, "body_incomplete", "the connection closed before the whole body arrived",
                          "send the whole body") from None
        except asyncio.TimeoutError:
            raise Refusal(408, "body_timeout", f"the body did not arrive within {limits.body_timeout_s:g} s",
                          "send the whole body at once") from None
        check = CHECKS.get(self.path) if self.method == "POST" else None
        if check is None:
            return
        try:
            check_content_type(self._header(b"content-type"), self._header(b"content-encoding"))
        except RequestError as err:
            raise Refusal(415, "unsupported_media_type", err.problem, err.fix) from None
        try:
            if self.path in STATE_CHANGING:
                check_idempotency_key(self._header(IDEMPOTENCY_HEADER.encode()))
            self.checked = check(self.body, limits)
        except RequestError as err:
            raise Refusal(422, "invalid_request", err.problem, err.fix) from None
        except Exception as exc:  # noqa: BLE001 - a body no check foresaw is still the client's problem, not a 500
            logger.warning("request check failed with %s", type(exc).__name__)
            raise Refusal(422, "unreadable_body", "the body could not be read",
                          "send a JSON object as described in the README's Serving section") from None

    def _forwarded_scope(self) -> tuple[dict, bytes]:
        body = self.body
        headers = [(k, v) for k, v in self.headers if k not in _INTERNAL]
        if self.checked is not None:
            # the service parses exactly what was checked, not the client's bytes (no parser differentials)
            body = json.dumps(self.checked.payload, ensure_ascii=False, separators=(",", ":")).encode()
            headers = [(k, v) for k, v in headers if k not in (b"content-length", b"content-type")]
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(REQUEST_ID_HEADER.encode(), self.rid.encode()),
                    (PRINCIPAL_HEADER.encode(), (self.principal or "").encode())]
        return dict(self.scope, headers=headers), body

    async def _dispatch(self) -> None:
        scope, body = self._forwarded_scope()
        replayed = False
        start, chunks = None, []

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await self.receive()

        async def hold(message):
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    await self._release(start, b"".join(chunks))

        try:
            await self.mw.app(scope, replay, hold)
        except Exception as exc:  # noqa: BLE001 - answered and audited here, never a hanging request
            logger.error("the service failed with %s", type(exc).__name__)
        if not self.answered:  # it failed, or returned without a complete response
            await self._answer_refusal(Refusal(500, "internal_error", "internal error",
                                               "retry; if it persists, report the X-Request-ID"))

    async def _release(self, start: dict | None, body: bytes) -> None:
        """Audit the held response, then send it; a line that cannot be written turns it into a 503."""
        status = start["status"] if start else 500
        try:
            payload = json.loads(body) if body and len(body) < _SUMMARY_MAX_BYTES else None
        except (UnicodeDecodeError, ValueError):
            payload = None
        model = payload if isinstance(payload, dict) else {}
        request = self.checked.payload if self.checked else None
        try:
            await self._audit(status, None, model.get("model_tag"), model.get("model_version"),
                              output_summary(payload, request))
        except OSError:
            return await self._answer_refusal(Refusal(503, "audit_unavailable", "the service cannot write its "
                                                      "audit log", "retry later"), audited=False)
        headers = [*start.get("headers", []), *self._id_headers()] if start else self._id_headers()
        self.answered = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    def _id_headers(self) -> list:
        out = [(REQUEST_ID_HEADER.encode(), self.rid.encode())]
        if self.client_id:
            out.append((CLIENT_REQUEST_ID_HEADER.encode(), self.client_id.encode()))
        return out

    async def _audit(self, status: int, reason: str | None, model_tag=None, model_version=None, summary=None):
        if self.open_path:  # probes every few seconds would drown the audit trail (they carry no input)
            return
        fsync = self.config.audit.fsync
        # `changes`: lines of requests the service handled on routes that change state; a refusal changed nothing
        # (and an fsync per 401 would let anyone queue disk flushes ahead of real work)
        sync = fsync == "always" or (fsync == "changes" and self.path in STATE_CHANGING and reason is None)
        write = dict(fd=self.fd, sync=sync, request_id=self.rid, client_request_id=self.client_id,
                     principal=self.principal, method=method_name(self.method),
                     endpoint=route_name(self.path, self.mw.routes), status=status, reason=reason,
                     latency_ms=1000 * (time.perf_counter() - self.start), body=self.body, model_tag=model_tag,
                     model_version=model_version, summary=summary,
                     inputs=self.checked.texts if self.checked else None)
        try:
            if sync:  # an fsync waits on the disk: off the event loop
                await asyncio.to_thread(lambda: self.mw.audit.write(**write))
            else:
                self.mw.audit.write(**write)
        except OSError:
            self.mw.audit_failing = True
            raise

    async def _answer_refusal(self, refusal: Refusal, audited: bool = True) -> None:
        if audited and self.fd is not None:
            try:
                await self._audit(refusal.status, refusal.reason)
            except OSError:
                refusal = Refusal(503, "audit_unavailable", "the service cannot write its audit log", "retry later")
        body = json.dumps(refusal.payload).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *self._id_headers(), *refusal.headers]
        self.answered = True
        await self.send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})
