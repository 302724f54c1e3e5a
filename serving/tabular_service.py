"""A tabular student's service: ``/score`` and ``/feedback`` for one packaged student, behind the security
middleware. Rows come in as raw column values, or as entity ids read from the online feature store.
``stillhouse serve TAG`` picks this service for a tabular student's tag.
"""

from __future__ import annotations

import asyncio

import bentoml

from stillhouse.errors import RequestError, Unavailable
from stillhouse.serve.config import ServeConfig, load_serve_config
from stillhouse.serving.front import MODEL_NAME, StudentFront, front_service
from stillhouse.serving.middleware import unavailable, unprocessable
from stillhouse.serving.model_service import call_model, tabular_model
from stillhouse.tasks.tabular.requests import (
    OnlineFeatures,
    Score,
    ScoreResponse,
    check_rows,
    check_score,
    check_sensitive,
)

CONFIG: ServeConfig = load_serve_config()
TabularModel = tabular_model(MODEL_NAME, CONFIG.model, CONFIG.batching, CONFIG.warmup_texts)


class TabularScorer(StudentFront):
    config = CONFIG
    model = bentoml.depends(TabularModel)

    def __init__(self) -> None:
        super().__init__()
        self.features: OnlineFeatures | None = None  # the Feast online store, on first use

    @bentoml.api(route="/score")
    async def score(self, ctx: bentoml.Context, rows: list[dict] | None = None,
                    entity_ids: list[str | int] | None = None) -> ScoreResponse:
        info = await self._describe()
        try:
            if entity_ids is not None:
                rows = await asyncio.to_thread(self._online_features(info).rows, entity_ids)
            check_rows(rows, info["columns"], info["numeric"])
            check_sensitive(rows, info.get("decides_with_sensitive_features"))
        except RequestError as err:
            return unprocessable(err, ctx)
        except Unavailable as err:
            return unavailable(err, ctx)
        results = await call_model(self.model.to_async.score_rows, rows)
        ids = entity_ids or [None] * len(results)
        return ScoreResponse(results=[Score(**r, entity_id=i) for r, i in zip(results, ids)], model_tag=info["tag"],
                             model_version=info["version"])

    def _online_features(self, info: dict) -> OnlineFeatures:
        if self.features is None:
            self.features = OnlineFeatures.for_model(info.get("features"), CONFIG.features_repo, info["columns"])
        return self.features


TabularScorer = front_service(TabularScorer, CONFIG, "/score", check_score)
