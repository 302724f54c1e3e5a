"""The serving configuration: which student, and the limits, tokens, audit log and feedback store around it.

Read from the YAML file named by ``$STILLHOUSE_SERVE_CONFIG`` (``stillhouse serve`` writes one from its flags);
every field has a default fit for a regulated deployment: authentication on, raw inputs never logged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from stillhouse.errors import ServeConfigError, StillhouseError
from stillhouse.serve.feedback_db import check_database_url
from stillhouse.serve.tokens import TokenTable
from stillhouse.spec.base import _Strict, validation_problems

CONFIG_ENV = "STILLHOUSE_SERVE_CONFIG"
README_SERVING = "the README's Serving section"


class AuthConfig(_Strict):
    """Bearer-token authentication; health and readiness probes stay open."""

    enabled: bool = Field(True, description="Require `Authorization: Bearer TOKEN` on every API route.")
    tokens_file: str | None = Field(None, description="File of `TOKEN_ID sha256:HEX` lines (a mounted Secret).")
    tokens_env: str = Field("STILLHOUSE_TOKEN_HASHES",
                            description="Environment variable with the same entries (lines or commas).")
    open_paths: list[str] = Field(["/healthz", "/livez", "/readyz"],
                                  description="Paths served without a token (probes). `/metrics` is not open by "
                                  "default: give Prometheus a token, or add it here behind a network policy.")

    def token_table(self) -> TokenTable:
        if self.tokens_file:
            path = Path(self.tokens_file)
            if not path.is_file():
                raise ServeConfigError(f"auth.tokens_file {path} does not exist",
                                       "mount the token Secret there, or point tokens_file at it")
            return TokenTable.parse(path.read_text(encoding="utf-8"), str(path))
        if os.environ.get(self.tokens_env):
            return TokenTable.parse(os.environ[self.tokens_env], f"${self.tokens_env}")
        raise ServeConfigError(
            f"authentication is on but no tokens are configured (auth.tokens_file, ${self.tokens_env})",
            f"`stillhouse token new NAME` prints a token and its hash line for ${self.tokens_env} or a tokens file; "
            "for local experiments only, serve with --no-auth")


class LimitsConfig(_Strict):
    """Bad requests are refused before they reach the model: 413 for the body, 422 for its content."""

    max_body_bytes: int = Field(1_000_000, gt=0, description="Request body size (413 above it).")
    max_texts: int = Field(64, gt=0, description="Texts (or /score rows and entity ids) in one request (422 above "
                           "it).")
    max_text_chars: int = Field(4000, gt=0, description="Characters in one text (422 above it).")
    max_passages: int = Field(100, gt=0, description="Candidate passages in one /rerank request (422 above it).")
    body_timeout_s: float = Field(30.0, gt=0, description="Time to send the whole body once the head arrived "
                                  "(408 after it): a client trickling bytes cannot hold a request open.")
    max_requests_per_principal: int = Field(
        100, gt=0, description="Requests one token may have in flight per worker (429 with Retry-After above it), "
        "so that one authenticated client cannot take every slot of `connections.max_concurrency`.")


class ConnectionsConfig(_Strict):
    """HTTP connection limits, enforced by ``stillhouse serve``'s protocol before any parsing of a request's head.

    One event loop serves every connection of a worker: an unbounded head (BentoML/uvicorn have no limit) takes
    seconds to parse and stalls every other client, and a connection that never sends a head is never closed.
    """

    max_head_bytes: int = Field(32_768, ge=1024, description="Request line plus headers (431 above; 414 for a "
                                "longer URL alone).")
    max_headers: int = Field(100, gt=0, description="Header fields in one request (431 above).")
    head_timeout_s: float = Field(10.0, gt=0, description="Time from connecting (or from the first byte of a "
                                  "next request) to the end of the request head; the connection is closed after.")
    keep_alive_s: int = Field(5, gt=0, description="An idle keep-alive connection is closed after this.")
    max_concurrency: int = Field(1000, gt=0, description="Open connections, and requests in flight, per worker. "
                                 "A connection past it closes a connection that carries no request (of the client "
                                 "holding the most; one that sent nothing first, then a half-sent head, then an "
                                 "idle keep-alive), so idle connections never lock a client out; with every "
                                 "connection busy it is refused (503).")
    max_per_client: int = Field(256, gt=0, description="Open connections from one source address (IPv6: its /64) "
                                "per worker; past it one of that address's own connections that carries no request "
                                "is closed, in the same order (503 if all are busy). Behind a proxy or a sidecar "
                                "every client shares its address: raise it to `max_concurrency` there.")


class BatchingConfig(_Strict):
    """BentoML adaptive batching of `/classify` across concurrent requests."""

    enabled: bool = True
    max_batch_size: int = Field(128, gt=0, description="Texts in one model call.")
    # Generous on purpose: BentoML sheds load (503) when its latency estimate exceeds this (DESIGN: measured).
    max_latency_ms: int = Field(10_000, gt=0, description="Longest a batch may wait and run.")


class AuditConfig(_Strict):
    path: str = Field("audit.jsonl", description="JSON-lines audit log (one line per request). A request whose "
                      "line cannot be written is refused (503).")
    log_inputs: bool = Field(False, description="Also log the request's texts (PII-redacted). Off by default.")
    fsync: Literal["changes", "always", "never"] = Field(
        "changes", description="When to wait for the line to reach the disk before answering: `changes` for "
        "requests that change stored state (/feedback, whose commit is fsync'd too), `always`, or `never`. Every "
        "line is written before the answer, so a killed process loses none; fsync also covers a power cut.")
    key_file: str | None = Field(None, description="Key for the HMAC of request bodies (`input_hmac`), at least 32 "
                                 "bytes (a mounted Secret). Unset: `$STILLHOUSE_AUDIT_KEY`, else `audit.key` "
                                 "beside the audit log, generated on first start.")
    key_env: str = Field("STILLHOUSE_AUDIT_KEY", description="Environment variable holding the audit key.")


class FeedbackConfig(_Strict):
    path: str = Field("feedback.sqlite", description="SQLite database (WAL mode) for feedback (one server).")
    url: str | None = Field(None, description="Instead of `path`: a PostgreSQL database shared by every replica, "
                            "`postgresql://user@host:5432/db?sslmode=verify-full`; the password comes from "
                            "$PGPASSWORD or $PGPASSFILE, never from here.")
    keep_requests: int = Field(100_000, ge=0, description="Recent requests whose texts are kept so that feedback "
                               "can cite a request id (0: feedback must carry the text itself).")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            return check_database_url(url)
        except StillhouseError as exc:
            raise ValueError(exc.problem + "; " + (exc.fix or "")) from None

    @property
    def location(self) -> str:
        """Where the store is: the database URL, else the SQLite file."""
        return self.url or self.path


class ServeConfig(_Strict):
    model: str | None = Field(None, description="BentoML model tag of the student, e.g. "
                              "`stillhouse-quickstart-sentiment:latest`.")
    chain: str | None = Field(None, description="Instead of `model`: a chain spec YAML (see stillhouse.serve.chain).")
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    connections: ConnectionsConfig = ConnectionsConfig()
    batching: BatchingConfig = BatchingConfig()
    audit: AuditConfig = AuditConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    passages: str | None = Field(None, description="Re-rankers: a BEIR corpus.jsonl whose passages `/rerank` "
                                 "requests may name by id (`passage_ids`) instead of sending their text.")
    features_repo: str | None = Field(
        None, description="Tabular students: the Feast repository `/score` reads borrower (entity) features from, "
        "if not the one the student was trained from (on a cluster: the chart's, with the Redis online store).")
    warmup_texts: list[str] = Field(["warm-up"], min_length=1,
                                    description="Classified once at start-up; /readyz answers 200 only after.")

    @model_validator(mode="after")
    def _one_target(self) -> ServeConfig:
        if (self.model is None) == (self.chain is None):
            raise ValueError("give exactly one of `model` (a student tag) and `chain` (a chain spec file)")
        return self


def read_yaml_mapping(path: str | Path, what: str) -> dict:
    """The YAML mapping in ``path`` (a serving config or a chain spec, named by ``what``), unvalidated."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ServeConfigError(f"{what} {path} does not exist", "check the path") from None
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"{what} {path} is not valid YAML: {str(exc).splitlines()[0]}",
                               "fix the file's syntax") from None
    if not isinstance(raw, dict):
        raise ServeConfigError(f"{what} {path} is not a mapping", "write `key: value` lines")
    return raw


def read_config_file(path: str | Path) -> dict:
    """The serving config in ``path``, unvalidated (the command line may still add the target)."""
    return read_yaml_mapping(path, "serving config")


def validate_config(raw: dict, source: str) -> ServeConfig:
    try:
        return ServeConfig.model_validate(raw)
    except ValidationError as exc:
        raise ServeConfigError(f"serving config {source}: {'; '.join(validation_problems(exc, README_SERVING))}",
                               "see `stillhouse serve --help` and the README's Serving section") from None


BENTO_ARGUMENT = "stillhouse_serve_config"


def load_serve_config(path: str | Path | None = None) -> ServeConfig:
    """The config at ``path``, else ``$STILLHOUSE_SERVE_CONFIG``, else the Bento argument ``stillhouse_serve_config``
    (the whole config as JSON, which ``stillhouse package`` stores in a Bento); errors name the field and fix."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        import bentoml

        inline = getattr(bentoml.use_arguments(), BENTO_ARGUMENT, None)
        if inline:
            return validate_config(json.loads(inline), f"Bento argument {BENTO_ARGUMENT}")
        raise ServeConfigError(f"no serving config: ${CONFIG_ENV} is not set",
                               f"start the service with `stillhouse serve TAG`, or set ${CONFIG_ENV} to a YAML file")
    return validate_config(read_config_file(path), str(path))
