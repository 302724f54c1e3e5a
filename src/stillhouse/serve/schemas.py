"""Request and response schemas shared by the student and chain services (classify, feedback), the checks that
guard them, and the strict decoding every route's check starts from (a task's own route has its schema and check
in its ``requests`` module).

The checks run on the raw body before BentoML parses it (``stillhouse.serve.policy``), so a bad request gets
one clear 422 naming the field and the limit, and no validation error that quotes the input reaches a log. The
body is decoded strictly (``decode_json_object``): where JSON parsers disagree (a BOM, lone surrogates, repeated
keys, huge numbers) the request is refused, and the service is then given the checked object re-encoded, so
what it parses is what was checked.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from pydantic import BaseModel, Field

from stillhouse.errors import RequestError
from stillhouse.serve.config import LimitsConfig


class Prediction(BaseModel):
    label: str
    confidence: float = Field(description="Probability of `label`.")
    probabilities: dict[str, float] = Field(description="Probability of every label (sums to 1).")


class ClassifyResponse(BaseModel):
    results: list[Prediction]
    model_tag: str = Field(description="BentoML model tag, name:version.")
    model_version: str


class StepResult(BaseModel):
    step: str
    model_tag: str
    model_version: str
    results: list[Prediction | None] = Field(description="One per input text; null where the step did not run.")


class ChainResponse(BaseModel):
    chain: str
    steps: list[StepResult]
    model_tag: str = Field(description="Every step's model tag, comma-separated, in step order.")
    model_version: str


class FeedbackRequest(BaseModel):
    label: str = Field(description="The correct label.")
    request_id: str | None = Field(None, description="X-Request-ID of the answer being corrected.")
    index: int = Field(0, ge=0, description="Position of the corrected text in that request.")
    text: str | None = Field(None, description="The input itself, instead of a request id.")
    comment: str | None = Field(None, description="Free text for the reviewer (stored, never logged).")
    step: str | None = Field(None, description="Chains only: the step whose answer is corrected.")


class FeedbackResponse(BaseModel):
    feedback_id: int
    status: str = "stored"
    model_tag: str
    model_version: str


MAX_INT_DIGITS = 18  # larger literals are no index, count or top_k; Python refuses > 4,300 digits with a ValueError
CHARSET = re.compile(r"^\s*charset\s*=\s*\"?utf-8\"?\s*$", re.IGNORECASE)


def check_content_type(value: str | None, encoding: str | None = None) -> None:
    """Refuse anything but ``application/json`` (optionally ``; charset=utf-8``), uncompressed: form and
    multipart bodies, other charsets, a missing type and compressed bodies never reach a parser."""
    if encoding is not None and encoding.strip().lower() != "identity":
        raise RequestError("the body must not be compressed (Content-Encoding)", "send the JSON body as it is")
    media, _, params = (value or "").partition(";")
    if media.strip().lower() != "application/json" or (params.strip() and not CHARSET.match(params)):
        raise RequestError("the body must be JSON in UTF-8 (Content-Type: application/json)",
                           "send Content-Type: application/json with a UTF-8 JSON body")


_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def check_idempotency_key(value: str | None) -> None:
    if value is not None and not _IDEMPOTENCY_KEY.match(value):
        raise RequestError("the Idempotency-Key header is not 1-128 characters of A-Z a-z 0-9 . _ : -",
                           "send a fresh UUID per correction, and the same one when retrying it")


def _refuse_constant(name: str):
    raise RequestError(f"the body holds {name}, which is not JSON", "send finite numbers only")


def _bounded_int(literal: str) -> int:
    if len(literal.lstrip("-")) > MAX_INT_DIGITS:
        raise RequestError(f"the body holds an integer of more than {MAX_INT_DIGITS} digits",
                           "send small integers (an index, a count)")
    return int(literal)


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise RequestError("the body holds a number too large for a float", "send finite numbers only")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    payload = dict(pairs)
    if len(payload) != len(pairs):
        # parsers disagree on which of two equal keys wins: refuse rather than check one and serve the other
        raise RequestError("the body repeats a key in one object", "send every field once")
    return payload


def _check_unicode(payload: object) -> None:
    """Every string (keys too) must be encodable: JSON's \\ud800 escapes decode to lone surrogates."""
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise RequestError("the body holds a string with a lone surrogate (\\ud800-\\udfff escape)",
                                   "send valid Unicode text") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def decode_json_object(body: bytes) -> dict:
    """The body as a JSON object, decoded strictly: UTF-8 without a byte-order mark, no NaN/Infinity, no huge
    integers, no repeated keys, no lone surrogates, bounded nesting. Any failure is one RequestError."""
    if body.startswith(b"\xef\xbb\xbf"):
        raise RequestError("the body starts with a byte-order mark", "send UTF-8 JSON without a BOM")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("the body is not UTF-8", "send a JSON object encoded in UTF-8") from None
    try:
        payload = json.loads(text, parse_constant=_refuse_constant, parse_int=_bounded_int,
                             parse_float=_finite_float, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise RequestError("the body is nested too deeply", "send a flat JSON object") from None
    except ValueError:  # JSONDecodeError, and float literals Python cannot hold
        raise RequestError("the body is not valid JSON", "send a JSON object with Content-Type: application/json") \
            from None
    if not isinstance(payload, dict):
        raise RequestError("the body is not a JSON object", "send an object such as {\"texts\": [\"...\"]}")
    _check_unicode(payload)
    return payload


def refuse_unknown(payload: dict, allowed: set[str] | frozenset[str]) -> None:
    unknown = set(payload) - set(allowed)
    if unknown:
        # counted, not named: the names are the client's words and the message reaches the audit trail
        raise RequestError(f"{len(unknown)} unknown field(s)", f"send only {sorted(allowed)}")


def check_text(value: object, what: str, limits: LimitsConfig) -> None:
    if not isinstance(value, str):
        raise RequestError(f"{what} is not a string", "send every text as a JSON string")
    if not value.strip():
        raise RequestError(f"{what} is empty", "send non-empty texts")
    if len(value) > limits.max_text_chars:
        raise RequestError(f"{what} has {len(value)} characters; the limit is {limits.max_text_chars}",
                           "shorten or split the text")


def texts_of(payload: dict, limits: LimitsConfig) -> list[str]:
    """The checked ``texts`` of a classify request (``payload`` already a JSON object)."""
    texts = payload.get("texts")
    if not isinstance(texts, list):
        raise RequestError("`texts` is missing or not a list", "send {\"texts\": [\"first text\", ...]}")
    if not texts:
        raise RequestError("`texts` is empty", "send at least one text")
    if len(texts) > limits.max_texts:
        raise RequestError(f"{len(texts)} texts in one request; the limit is {limits.max_texts}",
                           "split the texts over several requests")
    for i, text in enumerate(texts):
        check_text(text, f"texts[{i}]", limits)
    return texts


@dataclass(frozen=True)
class CheckedRequest:
    """A request body that passed its route's check: the decoded object (what the service will be given, as
    canonical JSON) and its input texts (for ``audit.log_inputs``)."""

    payload: dict
    texts: list[str]


def check_classify(body: bytes, limits: LimitsConfig) -> CheckedRequest:
    payload = decode_json_object(body)
    refuse_unknown(payload, {"texts"})
    return CheckedRequest(payload, texts_of(payload, limits))


def check_feedback(body: bytes, limits: LimitsConfig) -> CheckedRequest:
    payload = decode_json_object(body)
    refuse_unknown(payload, set(FeedbackRequest.model_fields))
    if not isinstance(payload.get("label"), str) or not payload["label"]:
        raise RequestError("`label` is missing or not a string", "send the correct label")
    for field in ("request_id", "step"):
        if payload.get(field) is not None and not isinstance(payload[field], str):
            raise RequestError(f"`{field}` is not a string", f"send `{field}` as a JSON string")
    index = payload.get("index", 0)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise RequestError("`index` is not a non-negative integer", "send the text's position, from 0")
    for field in ("text", "comment"):
        if payload.get(field) is not None:
            check_text(payload[field], f"`{field}`", limits)
    return CheckedRequest(payload, [payload["text"]] if payload.get("text") else [])


def one_list(payload: dict, route: str, keys: tuple[str, str], limit: int, what: str,
              over_limit_fix: str, noun: str | None = None) -> tuple[str, list]:
    """The one of ``keys`` a request sends (exactly one, a list of 1 to ``limit`` items) and its items."""
    first, second = keys
    if (first in payload) == (second in payload):
        raise RequestError(f"a {route} request needs exactly one of `{first}` and `{second}`", f"send {what}")
    key = first if first in payload else second
    items = payload[key]
    if not isinstance(items, list) or not items:
        raise RequestError(f"`{key}` is empty or not a list", f"send {{\"{key}\": [...]}} with 1 or more items")
    if len(items) > limit:
        raise RequestError(f"{len(items)} {noun or key} in one request; the limit is {limit}", over_limit_fix)
    return key, items


def candidate_ids(passages: list | None, passage_ids: list[str] | None) -> list[str]:
    """The ids of a rerank request's candidates: sent texts are named by their position ("0", "1", …), sent
    ``{"id", "text"}`` objects by their id, ``passage_ids`` by themselves."""
    if passages is not None:
        return [p["id"] if isinstance(p, dict) else str(i) for i, p in enumerate(passages)]
    return list(passage_ids or [])


#: Routes BentoML answers around every service (probes, metrics, docs): no body to check.
FRAMEWORK_ROUTES = frozenset({"/metrics", "/docs", "/docs.json", "/schema.json", "/healthz", "/livez", "/readyz"})
#: The route every student service and chain answers beside its own: corrections to an answer.
FEEDBACK_ROUTE = "/feedback"
#: Routes whose requests change stored state: their audit lines are fsync'd under ``audit.fsync: changes``.
STATE_CHANGING = frozenset({FEEDBACK_ROUTE})
