"""The base of every spec model, and the OpenAI-compatible endpoint that teachers and generators share."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


def validation_problems(err: ValidationError, reference: str = "the spec reference in the README") -> list[str]:
    """One ``field.path: message`` line per error of a pydantic validation (specs, serving configs, chains);
    an unknown field points the reader at ``reference``."""
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown field (check the spelling; see {reference})"
        lines.append(f"{path}: {msg}")
    return lines


def check_slug(name: str, underscore: bool = False) -> str:
    """``name`` if it is a slug of 1-63 characters: lowercase letters, digits and '-' (and '_' where
    ``underscore``), starting with a letter or digit. Run names become Kubernetes and BentoML names, where '_' is
    not allowed; scenario names only label rows and figures, and read better as ``income_shock``."""
    allowed, words = ("a-z0-9_-", "digits, '-' and '_'") if underscore else ("a-z0-9-", "digits and '-'")
    if not re.fullmatch(rf"[a-z0-9][{allowed}]{{0,62}}", name):
        raise ValueError(f"use 1-63 lowercase letters, {words}, starting with a letter or digit")
    return name


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `temprature` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class EndpointSpec(_Strict):
    """An OpenAI-compatible HTTP endpoint (vLLM, TGI, llama.cpp server, `stillhouse llm-serve`)."""

    url: str = Field(description="Base URL up to and including `/v1`, e.g. `http://vllm:8000/v1`.")
    model: str = Field(description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key itself).")
    timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one response.")
    max_retries: int = Field(3, ge=0, description="Retries after a timeout, connection error, 429 or 5xx.")
    concurrency: int = Field(4, gt=0, description="Requests in flight at once.")

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not re.match(r"https?://", url):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")
