"""A packaged re-ranker served (``/rerank``): a query and its candidates in, the candidates ranked by relevance out.
What the route asks and answers around the model is :mod:`stillhouse.tasks.reranking.requests`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stillhouse.models.reranker import RERANKER_FILE, load_reranker, score_pairs
from stillhouse.serve.student import STUDENT_FOLDER, ServedStudent, Serving, stored_identity
from stillhouse.tasks.reranking.requests import PassageStore, RerankResponse, check_rerank


@dataclass
class ServedReranker(ServedStudent):
    model: object = None
    tokenizer: object = None
    max_length: int = 0
    task = "reranking"

    @classmethod
    def load(cls, stored) -> ServedReranker:
        model, tokenizer, info = load_reranker(Path(stored.path) / STUDENT_FOLDER)
        return cls(**stored_identity(stored), labels=[], model=model, tokenizer=tokenizer, max_length=info.max_length)

    def score(self, pairs: list[dict]) -> list[float]:
        """One relevance score per ``{"query", "passage"}`` pair, in order."""
        if not pairs:
            return []
        scores = score_pairs(self.model, self.tokenizer, [p["query"] for p in pairs], [p["passage"] for p in pairs],
                             self.max_length)
        return [float(s) for s in scores]

    def warm_up(self, texts: list[str]) -> None:
        self.score([{"query": text, "passage": text} for text in texts])


SERVING = Serving(student_file=RERANKER_FILE, route="/rerank", service="stillhouse.serving.reranking_service:Reranker",
                  check=check_rerank, response=RerankResponse, load=ServedReranker.load, labels=lambda folder: [],
                  check_config=lambda config: PassageStore(config.passages))
