"""The audit log: one JSON line per request, written before its answer leaves, never holding a secret or raw input.

Each line: ``time`` (UTC, ISO 8601), ``request_id`` (server-generated), ``client_request_id`` (the client's
``X-Request-ID`` when it is a plain id, else null: a correlation field with no meaning to the server),
``principal`` (the token id, never the token), ``method`` and ``endpoint`` (from a fixed vocabulary: a route of
the service or ``unknown``), ``status``, ``reason`` (a fixed code when Stillhouse refused the request),
``latency_ms``, ``model_tag``, ``model_version``, ``input_hmac`` (HMAC-SHA256 of the request body as received,
keyed by the deployment's audit key: an auditor holding the key can match a disputed input, a reader of the log
cannot confirm a guessed one), ``output_summary`` (labels, probabilities, ranks: nothing the client wrote) and,
only with ``audit.log_inputs``, ``inputs`` with PII redacted.

Lines are appended with one ``write`` each (O_APPEND), so worker processes can share the file. The middleware
opens the file before it dispatches a request and writes the line before the response's first byte: a request
whose line cannot be written is answered 503 (see ``serving/middleware.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import uuid
from datetime import datetime, timezone
from pathlib import Path

from stillhouse.errors import ServeConfigError
from stillhouse.serve.files import private_dir
from stillhouse.serve.redact import redact
from stillhouse.serve.schemas import candidate_ids

REQUEST_ID_HEADER = "x-request-id"
CLIENT_REQUEST_ID_HEADER = "x-client-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
KEY_FILE_NAME = "audit.key"
MIN_KEY_BYTES = 32


def new_request_id() -> str:
    """The server's id of a request: random, so it names a request without being guessable."""
    return uuid.uuid4().hex


def client_request_id(value: str | None) -> str | None:
    """The client's ``X-Request-ID`` if it is a plain id (up to 64 of ``A-Za-z0-9._-``), else None."""
    return value if value and _CLIENT_REQUEST_ID.match(value) else None


def route_name(path: str, routes: frozenset[str]) -> str:
    """``path`` if it is one of the service's ``routes``, else ``"unknown"``: a client's URL never reaches the log."""
    return path if path in routes else "unknown"


def method_name(method: str) -> str:
    return method if method in METHODS else "OTHER"


def input_digest(body: bytes, key: bytes) -> str:
    """HMAC-SHA256 of ``body`` under the audit ``key``, hex (what ``input_hmac`` holds)."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _ranked_positions(results: list, request: dict | None) -> list[int | None]:
    ids = candidate_ids(request.get("passages"), request.get("passage_ids")) if request else []
    position = {pid: i for i, pid in enumerate(ids)}
    return [position.get(r.get("id")) for r in results[:10] if isinstance(r, dict)]


def output_summary(payload: object, request: dict | None = None) -> dict | None:
    """What the audit keeps of a response body: predicted labels and their probabilities, a ranking as the
    positions of its first ten candidates in the request (``request``: the checked request payload), a feedback id.

    ``payload`` is the decoded JSON response. Labels are the model's own; ids and error texts, which may echo
    the client, are dropped.
    """
    if not isinstance(payload, dict):
        return None
    summary = {}
    results = payload.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict) and "rank" in results[0]:
        summary["ranked_positions"] = _ranked_positions(results, request)
        summary["top_score"] = round(float(results[0].get("score", 0.0)), 4)
    elif isinstance(results, list):
        summary["labels"] = [r.get("label") for r in results if isinstance(r, dict)]
        summary["confidence"] = [round(r.get("confidence", 0.0), 4) for r in results if isinstance(r, dict)]
    steps = payload.get("steps")
    if isinstance(steps, list):
        summary["steps"] = [{"step": s.get("step"), "labels": [r.get("label") for r in s.get("results") or []
                                                             if isinstance(r, dict)]}
                            for s in steps if isinstance(s, dict)]
    if isinstance(payload.get("feedback_id"), int):
        summary["feedback_id"] = payload["feedback_id"]
    return summary or None


def _key_material(raw: bytes, source: str) -> bytes:
    key = raw.strip()
    if len(key) < MIN_KEY_BYTES:
        raise ServeConfigError(f"the audit key in {source} is shorter than {MIN_KEY_BYTES} bytes",
                               "use `openssl rand -hex 32` (or leave audit.key_file unset to have one generated)")
    return key


def config_key(audit) -> bytes:
    """The key of an ``AuditConfig`` (see :func:`load_audit_key`)."""
    return load_audit_key(audit.key_file, audit.key_env, audit.path)


def load_audit_key(key_file: str | None, key_env: str, audit_path: str | Path) -> bytes:
    """The deployment's audit key: ``key_file`` (a mounted Secret), else ``$key_env``, else ``audit.key`` beside
    the audit log, generated (0600) by whichever process gets there first."""
    if key_file:
        try:
            return _key_material(Path(key_file).read_bytes(), key_file)
        except FileNotFoundError:
            raise ServeConfigError(f"audit.key_file {key_file} does not exist",
                                   "mount the audit key Secret there, or leave audit.key_file unset") from None
    if os.environ.get(key_env):
        return _key_material(os.environ[key_env].encode(), f"${key_env}")
    path = private_dir(Path(audit_path).parent) / KEY_FILE_NAME
    if not path.exists():
        # written whole under a temporary name, then linked: a concurrent reader never sees a partial key
        tmp = path.with_name(f".{KEY_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return _key_material(path.read_bytes(), str(path))


class AuditLog:
    """Appends audit lines; ``reserve`` opens the file first so that an unwritable log refuses the request."""

    def __init__(self, path: str | Path, key: bytes, log_inputs: bool = False):
        self.path = Path(path)
        self.key = key
        self.log_inputs = log_inputs
        private_dir(self.path.parent)

    @classmethod
    def from_config(cls, audit) -> AuditLog:
        """The audit log an ``AuditConfig`` describes, with its key (a bad key file fails here)."""
        return cls(audit.path, config_key(audit), audit.log_inputs)

    def reserve(self) -> int:
        """A descriptor to append one line to; raises OSError if the log cannot be opened for writing."""
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, *, fd: int | None = None, sync: bool = False, request_id: str, principal: str | None,
              method: str, endpoint: str, status: int, latency_ms: float, body: bytes | None = None,
              client_request_id: str | None = None, reason: str | None = None, model_tag: str | None = None,
              model_version: str | None = None, summary: dict | None = None,
              inputs: list[str] | None = None) -> dict:
        """Append one line (through ``fd`` if given, which stays open); ``sync`` waits for it to reach the disk.

        Raises OSError when the line could not be written whole.
        """
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": request_id, "client_request_id": client_request_id, "principal": principal,
            "method": method, "endpoint": endpoint, "status": status, "reason": reason,
            "latency_ms": round(latency_ms, 2), "model_tag": model_tag, "model_version": model_version,
            "input_hmac": input_digest(body, self.key) if body else None, "output_summary": summary,
        }
        if self.log_inputs and inputs is not None:
            record["inputs"] = [redact(text) for text in inputs]
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        own = fd is None
        fd = self.reserve() if own else fd
        try:
            if os.write(fd, line) != len(line):
                raise OSError("short write to the audit log")
            if sync:
                os.fsync(fd)
        finally:
            if own:
                os.close(fd)
        return record

