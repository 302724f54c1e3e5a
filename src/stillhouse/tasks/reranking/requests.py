"""What ``/rerank`` asks and answers around the model, without loading one (a re-ranker's public service imports
only this): the request's schema and check, the candidates' texts (sent, or looked up by id in a passage store)
and their order."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from stillhouse.errors import DataError, RequestError, ServeConfigError
from stillhouse.serve.config import LimitsConfig
from stillhouse.serve.schemas import (
    CheckedRequest,
    candidate_ids,
    check_text,
    decode_json_object,
    one_list,
    refuse_unknown,
)
from stillhouse.tasks.reranking.data import read_jsonl_records


class RankedPassage(BaseModel):
    id: str = Field(description="The passage's id (its position in `passages`, from 0, when sent without ids).")
    score: float = Field(description="Relevance log-odds; σ(score) is the model's relevance probability.")
    rank: int = Field(description="1 = most relevant.")


class RerankResponse(BaseModel):
    results: list[RankedPassage] = Field(description="The passages, most relevant first (`top_k` of them).")
    model_tag: str
    model_version: str


RERANK_FIELDS = {"query", "passages", "passage_ids", "top_k"}


def check_rerank(body: bytes, limits: LimitsConfig) -> CheckedRequest:
    """A /rerank request: ``query``, and exactly one of ``passages`` (texts, or ``{"id", "text"}`` objects) and
    ``passage_ids`` (ids in the service's passage store); optional ``top_k``. Its texts: the query, the passages."""
    payload = decode_json_object(body)
    refuse_unknown(payload, RERANK_FIELDS)
    check_text(payload.get("query"), "`query`", limits)
    key, items = one_list(payload, "rerank", ("passages", "passage_ids"), limits.max_passages,
                           "the candidates' texts as `passages`, or their ids as `passage_ids`",
                           "send fewer candidates (a first stage's top k)", noun="passages")
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
        check_text(item, f"passages[{i}]", limits)
        texts.append(item)
    return CheckedRequest(payload, texts)


class PassageStore:
    """Passages by id from a BEIR corpus.jsonl (``passages`` in the serving config), read once at start-up."""

    def __init__(self, path: str | Path | None):
        self.texts: dict[str, str] = {}
        if path:
            try:
                self.texts = read_jsonl_records(Path(path), "passages")
            except DataError as err:
                raise ServeConfigError(f"serving config `passages`: {err.problem}", err.fix) from None

    def candidates(self, passages: list | None, passage_ids: list[str] | None) -> tuple[list[str], list[str]]:
        """(ids, texts) of a request's candidates: sent texts get their position as id ("0", "1", …), sent
        ``{"id", "text"}`` objects keep their id, ``passage_ids`` are looked up here."""
        if passages is not None:
            return candidate_ids(passages, None), [p["text"] if isinstance(p, dict) else p for p in passages]
        if not self.texts:
            raise RequestError("this service has no passage store, so `passage_ids` cannot be looked up",
                               "send the passages' texts as `passages`, or configure `passages:` when serving")
        unknown = [pid for pid in passage_ids if pid not in self.texts]
        if unknown:
            raise RequestError(f"{len(unknown)} passage id(s) are not in the passage store",
                               "send ids from the configured corpus, or send the texts as `passages`")
        return list(passage_ids), [self.texts[pid] for pid in passage_ids]


def rank_passages(ids: list[str], scores: list[float], top_k: int | None = None) -> list[dict]:
    """``{"id", "score", "rank"}`` per candidate, highest score first (ties keep the sent order), cut to ``top_k``."""
    order = sorted(range(len(ids)), key=lambda i: -scores[i])
    return [{"id": ids[i], "score": float(scores[i]), "rank": rank}
            for rank, i in enumerate(order[:top_k] if top_k else order, start=1)]
