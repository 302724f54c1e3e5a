"""The audit log: one JSON line per request, written after the response, never holding a secret or raw PII.

Each line: ``time`` (UTC, ISO 8601), ``request_id``, ``principal`` (the token id, never the token),
``method``, ``endpoint``, ``status``, ``latency_ms``, ``model_tag``, ``model_version``, ``input_sha256`` (of the
request body as received; lets an auditor match a disputed input without the log holding it),
``output_summary`` (labels and top probabilities only) and, only with ``audit.log_inputs``, ``inputs`` with PII
redacted. Lines are appended with one ``write`` each (O_APPEND), so worker processes can share the file.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import datetime, timezone
from pathlib import Path

from stillhouse.serve.redact import redact

REQUEST_ID_HEADER = "x-request-id"
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def request_id(client_value: str | None) -> str:
    """The client's ``X-Request-ID`` when it is a plain id (it is logged verbatim), else a new random one."""
    if client_value and _CLIENT_REQUEST_ID.match(client_value):
        return client_value
    return uuid.uuid4().hex


def output_summary(payload: object) -> dict | None:
    """What the audit keeps of a response body: predicted labels and their probabilities (or a ranking's first
    ids and top score), counts, error text.

    ``payload`` is the decoded JSON response. Free text other than labels and our own error messages is dropped.
    """
    if not isinstance(payload, dict):
        return None
    summary = {}
    results = payload.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict) and "rank" in results[0]:
        # a ranking: the order of the first ten candidates (ids are the caller's, so they are redacted too)
        summary["ranked_ids"] = [redact(str(r.get("id")))[:64] for r in results[:10] if isinstance(r, dict)]
        summary["top_score"] = round(float(results[0].get("score", 0.0)), 4)
    elif isinstance(results, list):
        summary["labels"] = [r.get("label") for r in results if isinstance(r, dict)]
        summary["confidence"] = [round(r.get("confidence", 0.0), 4) for r in results if isinstance(r, dict)]
    steps = payload.get("steps")
    if isinstance(steps, list):
        summary["steps"] = [{"step": s.get("step"), "labels": [r.get("label") for r in s.get("results") or []
                                                             if isinstance(r, dict)]}
                            for s in steps if isinstance(s, dict)]
    if "feedback_id" in payload:
        summary["feedback_id"] = payload["feedback_id"]
    if isinstance(payload.get("error"), str):
        summary["error"] = redact(payload["error"])[:300]
    return summary or None


class AuditLog:
    def __init__(self, path: str | Path, log_inputs: bool = False):
        self.path = Path(path)
        self.log_inputs = log_inputs
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, *, request_id: str, principal: str | None, method: str, endpoint: str, status: int,
              latency_ms: float, input_sha256: str | None, model_tag: str | None = None,
              model_version: str | None = None, summary: dict | None = None,
              inputs: list[str] | None = None) -> dict:
        record = {
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "request_id": request_id, "principal": principal, "method": method, "endpoint": endpoint,
            "status": status, "latency_ms": round(latency_ms, 2), "model_tag": model_tag,
            "model_version": model_version, "input_sha256": input_sha256, "output_summary": summary,
        }
        if self.log_inputs and inputs is not None:
            record["inputs"] = [redact(text) for text in inputs]
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return record
