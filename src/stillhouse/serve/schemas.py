"""Request and response schemas of the student and chain services, and the checks that guard them.

The checks run on the raw body before BentoML parses it (``serving/middleware.py``), so a bad request gets
one clear 422 naming the field and the limit, and no validation error that quotes the input reaches a log.
"""

from __future__ import annotations

import json

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


class RankedPassage(BaseModel):
    id: str = Field(description="The passage's id (its position in `passages`, from 0, when sent without ids).")
    score: float = Field(description="Relevance log-odds; σ(score) is the model's relevance probability.")
    rank: int = Field(description="1 = most relevant.")


class RerankResponse(BaseModel):
    results: list[RankedPassage] = Field(description="The passages, most relevant first (`top_k` of them).")
    model_tag: str
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


def _json_object(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError("the body is not valid JSON", "send a JSON object with Content-Type: application/json")
    if not isinstance(payload, dict):
        raise RequestError("the body is not a JSON object", "send an object such as {\"texts\": [\"...\"]}")
    return payload


def _check_text(value: object, what: str, limits: LimitsConfig) -> None:
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
        _check_text(text, f"texts[{i}]", limits)
    return texts


def check_classify(body: bytes, limits: LimitsConfig) -> list[str]:
    payload = _json_object(body)
    unknown = sorted(set(payload) - {"texts"})
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}", "send only `texts`")
    return texts_of(payload, limits)


def check_feedback(body: bytes, limits: LimitsConfig) -> list[str]:
    payload = _json_object(body)
    unknown = sorted(set(payload) - set(FeedbackRequest.model_fields))
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}", f"send only {sorted(FeedbackRequest.model_fields)}")
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
            _check_text(payload[field], f"`{field}`", limits)
    return [payload["text"]] if payload.get("text") else []


RERANK_FIELDS = {"query", "passages", "passage_ids", "top_k"}


def check_rerank(body: bytes, limits: LimitsConfig) -> list[str]:
    """A /rerank request: ``query``, and exactly one of ``passages`` (texts, or ``{"id", "text"}`` objects) and
    ``passage_ids`` (ids in the service's passage store); optional ``top_k``. Returns the query and the texts."""
    payload = _json_object(body)
    unknown = sorted(set(payload) - RERANK_FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s) {unknown}", f"send only {sorted(RERANK_FIELDS)}")
    _check_text(payload.get("query"), "`query`", limits)
    if ("passages" in payload) == ("passage_ids" in payload):
        raise RequestError("a rerank request needs exactly one of `passages` and `passage_ids`",
                           "send the candidates' texts as `passages`, or their ids as `passage_ids`")
    key = "passages" if "passages" in payload else "passage_ids"
    items = payload[key]
    if not isinstance(items, list) or not items:
        raise RequestError(f"`{key}` is empty or not a list", f"send {{\"{key}\": [...]}} with 1 or more items")
    if len(items) > limits.max_passages:
        raise RequestError(f"{len(items)} passages in one request; the limit is {limits.max_passages}",
                           "send fewer candidates (a first stage's top k)")
    top_k = payload.get("top_k")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise RequestError("`top_k` is not a positive integer", "send how many ranked passages to return, or omit it")
    texts = [payload["query"]]
    for i, item in enumerate(items):
        if key == "passage_ids":
            if not isinstance(item, str) or not item:
                raise RequestError(f"passage_ids[{i}] is not a non-empty string", "send passage ids as strings")
            continue
        if isinstance(item, dict):
            if set(item) - {"id", "text"} or not isinstance(item.get("id"), str):
                raise RequestError(f"passages[{i}] is not {{\"id\": string, \"text\": string}}",
                                   "send each passage as a string, or as an object with `id` and `text`")
            item = item.get("text")
        _check_text(item, f"passages[{i}]", limits)
        texts.append(item)
    return texts


#: Routes whose bodies are checked before they reach BentoML, and their checks (each returns the input texts).
CHECKS = {"/classify": check_classify, "/feedback": check_feedback, "/rerank": check_rerank}
