"""The security middleware of every Stillhouse service (pure ASGI, added with ``add_asgi_middleware``).

Per HTTP request, in this order: a request id (the client's ``X-Request-ID`` if plain, else a new one, echoed in
the response); the bearer token (401 without detail; probe paths stay open); the body, read up to
``limits.max_body_bytes`` (413 beyond); the route's check from ``stillhouse.serve.schemas.CHECKS`` (422 naming the
problem, never quoting the input); then the service; finally one audit line. The service sees two headers set
here and nowhere else (client-sent copies are dropped): ``x-request-id`` and ``x-stillhouse-principal``.
"""

from __future__ import annotations

import hashlib
import json
import time

from starlette.responses import JSONResponse

from stillhouse.errors import RequestError
from stillhouse.serve.audit import REQUEST_ID_HEADER, AuditLog, output_summary, request_id
from stillhouse.serve.config import ServeConfig
from stillhouse.serve.schemas import CHECKS

PRINCIPAL_HEADER = "x-stillhouse-principal"
_INTERNAL = {REQUEST_ID_HEADER.encode(), PRINCIPAL_HEADER.encode()}
_SUMMARY_MAX_BYTES = 4 << 20  # larger responses are audited without an output summary


class BodyTooLarge(Exception):
    pass


def unprocessable(err: RequestError, ctx) -> JSONResponse:
    """The 422 answer of a service method to a request the middleware could not check (e.g. an unknown label)."""
    ctx.response.status_code = 422  # BentoML sets a returned response's status from the context
    return JSONResponse({"error": err.problem, "fix": err.fix}, status_code=422)


async def _send_json(send, status: int, body: bytes, rid: str, extra: list | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (REQUEST_ID_HEADER.encode(), rid.encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        size += len(message.get("body", b""))
        if size > limit:
            raise BodyTooLarge
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


class SecurityMiddleware:
    def __init__(self, app, config: ServeConfig):
        self.app = app
        self.config = config
        self.tokens = config.auth.token_table() if config.auth.enabled else None
        self.audit = AuditLog(config.audit.path, config.audit.log_inputs)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path, method = scope["path"], scope["method"]
        headers = {k.lower(): v for k, v in scope["headers"]}
        rid = request_id(headers.get(REQUEST_ID_HEADER.encode(), b"").decode("latin-1"))
        state = {"status": 500, "body": bytearray(), "sha": None, "principal": None, "texts": None, "audited": False}

        def audit():
            # Written before the response's last byte leaves: whoever got an answer can find its audit line.
            state["audited"] = True
            try:
                payload = json.loads(bytes(state["body"])) if state["body"] else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                payload = None
            model = payload if isinstance(payload, dict) else {}
            self.audit.write(request_id=rid, principal=state["principal"], method=method, endpoint=path,
                             status=state["status"], latency_ms=1000 * (time.perf_counter() - start),
                             input_sha256=state["sha"], model_tag=model.get("model_tag"),
                             model_version=model.get("model_version"), summary=output_summary(payload),
                             inputs=state["texts"])

        async def reject(status: int, payload: dict, extra=None):
            body = json.dumps(payload).encode()
            state["status"], state["body"] = status, bytearray(body)
            audit()
            await _send_json(send, status, body, rid, extra)

        open_path = path in self.config.auth.open_paths
        if self.tokens is not None and not open_path:
            scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            state["principal"] = self.tokens.principal(token.strip()) if scheme.lower() == "bearer" else None
            if state["principal"] is None:
                return await reject(401, {"error": "unauthorized"}, [(b"www-authenticate", b"Bearer")])
        try:
            declared = headers.get(b"content-length", b"0").decode("latin-1")
            if not declared.isdigit() or int(declared) > self.config.limits.max_body_bytes:
                raise BodyTooLarge
            body = await _read_body(receive, self.config.limits.max_body_bytes)
        except BodyTooLarge:
            return await reject(413, {"error": f"request body over {self.config.limits.max_body_bytes:,} bytes",
                                      "fix": "send fewer or shorter texts per request"})
        state["sha"] = hashlib.sha256(body).hexdigest() if body else None
        check = CHECKS.get(path) if method == "POST" else None
        if check is not None:
            try:
                state["texts"] = check(body, self.config.limits)
            except RequestError as err:
                return await reject(422, {"error": err.problem, "fix": err.fix})
        internal = [(REQUEST_ID_HEADER.encode(), rid.encode()),
                    (PRINCIPAL_HEADER.encode(), (state["principal"] or "").encode())]
        scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k.lower() not in _INTERNAL] + internal)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def capture(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message = dict(message, headers=[*message.get("headers", []),
                                                 (REQUEST_ID_HEADER.encode(), rid.encode())])
            elif message["type"] == "http.response.body":
                if len(state["body"]) < _SUMMARY_MAX_BYTES:
                    state["body"] += message.get("body", b"")
                if not message.get("more_body") and not open_path:
                    audit()
            await send(message)

        try:
            await self.app(scope, replay, capture)
        finally:
            # Probes every few seconds would drown the audit trail (they carry no input); an app that failed
            # before answering is still audited.
            if not open_path and not state["audited"]:
                audit()
