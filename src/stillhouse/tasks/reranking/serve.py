"""What ``/rerank`` does around the model: find the candidates' texts, and order them by the model's scores."""

from __future__ import annotations

from pathlib import Path

from stillhouse.errors import RequestError, ServeConfigError
from stillhouse.serve.schemas import candidate_ids


class PassageStore:
    """Passages by id from a BEIR corpus.jsonl (``passages`` in the serving config), read once at start-up."""

    def __init__(self, path: str | Path | None):
        self.texts: dict[str, str] = {}
        if path:
            from stillhouse.tasks.reranking.data import read_jsonl_records
            from stillhouse.errors import DataError

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
