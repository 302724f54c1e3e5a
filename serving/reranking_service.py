"""A re-ranker's service: ``/rerank`` and ``/feedback`` for one packaged student, behind the security middleware.

Configured like the classifier's (``$STILLHOUSE_SERVE_CONFIG``), plus ``passages``: a corpus whose passages
requests may name by id. ``stillhouse serve TAG`` picks this service for a re-ranker's tag.
"""

from __future__ import annotations

import bentoml

from stillhouse.errors import RequestError
from stillhouse.serve.config import ServeConfig, load_serve_config
from stillhouse.serving.front import MODEL_NAME, StudentFront, front_service
from stillhouse.serving.middleware import unprocessable
from stillhouse.serving.model_service import call_model, reranker_model
from stillhouse.tasks.reranking.requests import (PassageStore, RankedPassage, RerankResponse, check_rerank,
                                             rank_passages)

CONFIG: ServeConfig = load_serve_config()
RerankerModel = reranker_model(MODEL_NAME, CONFIG.model, CONFIG.batching, CONFIG.warmup_texts)


class Reranker(StudentFront):
    config = CONFIG
    model = bentoml.depends(RerankerModel)

    def __init__(self) -> None:
        super().__init__()
        self.passages = PassageStore(CONFIG.passages)

    @bentoml.api(route="/rerank")
    async def rerank(self, query: str, ctx: bentoml.Context, passages: list[str | dict[str, str]] | None = None,
                     passage_ids: list[str] | None = None, top_k: int | None = None) -> RerankResponse:
        info = await self._describe()
        try:
            ids, texts = self.passages.candidates(passages, passage_ids)
        except RequestError as err:
            return unprocessable(err, ctx)
        scores = await call_model(self.model.to_async.score, [{"query": query, "passage": t} for t in texts])
        return RerankResponse(results=[RankedPassage(**r) for r in rank_passages(ids, scores, top_k)],
                              model_tag=info["tag"], model_version=info["version"])


Reranker = front_service(Reranker, CONFIG, "/rerank", check_rerank)
