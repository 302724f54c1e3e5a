"""The security middleware of every Stillhouse service (pure ASGI, added with ``add_asgi_middleware``): the
adapter of the request policy (:mod:`stillhouse.serve.policy`, which decides what is checked, in which order,
and how each refusal reads) to ASGI's messages.

Here: the request's state, reading the body from ``receive`` (bounded, with its deadline), handing the service the
checked request, and holding the service's response until its audit line is written (fsync'd per ``audit.fsync``;
if that fails the client gets 503 instead). Any failure here or in the service is answered (500 otherwise) and
audited, never left to BentoML. The service sees two headers set here and nowhere else (client-sent copies are
dropped): ``x-request-id`` and ``x-stillhouse-principal``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from starlette.responses import JSONResponse

from stillhouse.errors import RequestError, Unavailable
from stillhouse.serve.audit import (CLIENT_REQUEST_ID_HEADER, REQUEST_ID_HEADER, AuditLog, client_request_id,
                                    method_name, new_request_id, output_summary, route_name)
from stillhouse.serve.config import ServeConfig
from stillhouse.serve.policy import (IDEMPOTENCY_HEADER, PRINCIPAL_HEADER, READINESS_PATH, Admission, AuditHealth,
                                     Check, Refusal, RequestPolicy, audit_unavailable, body_incomplete, body_timeout,
                                     body_too_large, forwarded, header)

__all__ = ["IDEMPOTENCY_HEADER", "PRINCIPAL_HEADER", "READINESS_PATH", "SecurityMiddleware", "principal_of",
           "remember_request", "unavailable", "unprocessable"]
_SUMMARY_MAX_BYTES = 4 << 20  # larger responses are audited without an output summary
logger = logging.getLogger("stillhouse.serving")


def principal_of(ctx) -> str | None:
    """The authenticated principal of the request a service method serves (None with auth off)."""
    return ctx.request.headers.get(PRINCIPAL_HEADER) or None


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


class BodyTooLarge(Exception):
    pass


class BodyIncomplete(Exception):
    """The client went away before its body had all arrived."""


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


class SecurityMiddleware:
    def __init__(self, app, config: ServeConfig, checks: dict[str, Check]):
        self.app = app
        self.config = config
        self.policy = RequestPolicy(config, checks)  # `checks`: the service's own routes and their checks
        self.audit = AuditLog.from_config(config.audit)
        self.health = AuditHealth(self.audit)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            return await _Exchange(self, scope, receive, send).run()
        if scope["type"] == "websocket":  # no route of ours speaks it
            return await send({"type": "websocket.close", "code": 1008})
        return await self.app(scope, receive, send)


class _Exchange:
    """One request through the middleware (the state its steps share)."""

    def __init__(self, middleware: SecurityMiddleware, scope, receive, send):
        self.mw, self.policy, self.scope = middleware, middleware.policy, scope
        self.receive, self.send = receive, send
        self.start = time.perf_counter()
        self.rid = new_request_id()
        self.headers = [(k.lower(), v) for k, v in scope["headers"]]
        self.client_id = client_request_id(header(self.headers, REQUEST_ID_HEADER.encode()))
        self.path, self.method = scope["path"], scope["method"]
        self.admission = Admission(self.policy, middleware.health, self.path, self.headers)
        self.body = b""
        self.checked = None
        self.answered = False

    async def run(self) -> None:
        try:
            try:
                declared = self.admission.admit()
                await self._read_and_check(declared)
            except Refusal as refusal:
                return await self._answer_refusal(refusal)
            await self._dispatch()
        finally:
            self.admission.release()

    async def _read_and_check(self, declared: int) -> None:
        limits = self.mw.config.limits
        try:
            self.body = await asyncio.wait_for(_read_body(self.receive, limits.max_body_bytes, declared),
                                               limits.body_timeout_s)
        except BodyTooLarge:
            raise body_too_large(limits) from None
        except BodyIncomplete:
            raise body_incomplete() from None
        except asyncio.TimeoutError:
            raise body_timeout(limits) from None
        self.checked = self.policy.check_body(self.path, self.method, self.headers, self.body)

    async def _dispatch(self) -> None:
        headers, body = forwarded(self.headers, self.body, self.checked, self.rid, self.admission.principal)
        scope = dict(self.scope, headers=headers)
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
            return await self._answer_refusal(audit_unavailable("retry later"), audited=False)
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
        if self.admission.open_path:  # probes every few seconds would drown the audit trail (they carry no input)
            return
        sync = self.policy.audit_sync(self.path, reason)
        write = dict(fd=self.admission.fd, sync=sync, request_id=self.rid, client_request_id=self.client_id,
                     principal=self.admission.principal, method=method_name(self.method),
                     endpoint=route_name(self.path, self.policy.routes), status=status, reason=reason,
                     latency_ms=1000 * (time.perf_counter() - self.start), body=self.body, model_tag=model_tag,
                     model_version=model_version, summary=summary,
                     inputs=self.checked.texts if self.checked else None)
        try:
            if sync:  # an fsync waits on the disk: off the event loop
                await asyncio.to_thread(lambda: self.mw.audit.write(**write))
            else:
                self.mw.audit.write(**write)
        except OSError:
            self.mw.health.failing = True
            raise

    async def _answer_refusal(self, refusal: Refusal, audited: bool = True) -> None:
        if audited and self.admission.fd is not None:
            try:
                await self._audit(refusal.status, refusal.reason)
            except OSError:
                refusal = audit_unavailable("retry later")
        body = refusal.body()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   *self._id_headers(), *refusal.headers]
        self.answered = True
        await self.send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})
