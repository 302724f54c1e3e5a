"""The student service: ``/classify`` and ``/feedback`` for one packaged student, behind the security middleware.

Two BentoML services, so that the model scales on its own (and chains reuse it): ``StudentModel`` holds the
student and batches concurrent calls (adaptive batching); ``Student`` is the public front (validation,
feedback, audit) and calls it through ``bentoml.depends``. Configured by the YAML file in
``$STILLHOUSE_SERVE_CONFIG`` (see ``stillhouse.serve.config``)::

    stillhouse serve stillhouse-quickstart-sentiment:latest   # writes the config, runs `bentoml serve` on it
    bentoml serve stillhouse.serving.student_service:Student   # the same, given $STILLHOUSE_SERVE_CONFIG
"""

from __future__ import annotations

import asyncio

import bentoml

from stillhouse.errors import RequestError, Unavailable
from stillhouse.serve.config import ServeConfig, load_serve_config
from stillhouse.serve.feedback import FeedbackStore
from stillhouse.tasks.reranking.serve import PassageStore, rank_passages
from stillhouse.serve.schemas import (ClassifyResponse, FeedbackResponse, Prediction, RankedPassage, RerankResponse,
                                     Score, ScoreResponse)
from stillhouse.tasks.tabular.serve import OnlineFeatures, check_rows
from stillhouse.serving.middleware import (IDEMPOTENCY_HEADER, SecurityMiddleware, principal_of, remember_request,
                                           unavailable, unprocessable)
from stillhouse.serving.model_service import SERVICE_OPTIONS, call_model, student_model_service

CONFIG: ServeConfig = load_serve_config()


StudentModel = student_model_service("stillhouse-student-model", CONFIG.model, CONFIG.batching, CONFIG.warmup_texts)


@bentoml.service(name="stillhouse-student", **SERVICE_OPTIONS)
class Student:
    model = bentoml.depends(StudentModel)

    def __init__(self) -> None:
        self.feedback_store = FeedbackStore(CONFIG.feedback.location, CONFIG.feedback.keep_requests)
        self.passages = PassageStore(CONFIG.passages)
        self.info: dict | None = None
        self.features: OnlineFeatures | None = None  # tabular students: the Feast online store, on first use

    async def __is_ready__(self) -> bool:
        # Ready once the model service answers (it warmed up in its __init__); until then /readyz is 503.
        try:
            await self._describe()
        except Exception:  # noqa: BLE001 - not reachable yet is exactly "not ready"
            return False
        return True

    async def _describe(self) -> dict:
        if self.info is None:
            self.info = await call_model(self.model.to_async.describe)
        return self.info

    @bentoml.api(route="/classify")
    async def classify(self, texts: list[str], ctx: bentoml.Context) -> ClassifyResponse:
        info = await self._describe()
        if info["task"] != "classification":
            return unprocessable(RequestError(f"{info['tag']} is a re-ranker", "send queries and passages to "
                                              "/rerank"), ctx)
        results = await call_model(self.model.to_async.predict, texts)
        await remember_request(self.feedback_store, ctx, texts, info["tag"])
        return ClassifyResponse(results=[Prediction(**r) for r in results], model_tag=info["tag"],
                                model_version=info["version"])

    @bentoml.api(route="/rerank")
    async def rerank(self, query: str, ctx: bentoml.Context, passages: list[str | dict[str, str]] | None = None,
                     passage_ids: list[str] | None = None, top_k: int | None = None) -> RerankResponse:
        info = await self._describe()
        try:
            if info["task"] != "reranking":
                raise RequestError(f"{info['tag']} is a classifier", "send texts to /classify")
            ids, texts = self.passages.candidates(passages, passage_ids)
        except RequestError as err:
            return unprocessable(err, ctx)
        scores = await call_model(self.model.to_async.score, [{"query": query, "passage": t} for t in texts])
        return RerankResponse(results=[RankedPassage(**r) for r in rank_passages(ids, scores, top_k)],
                              model_tag=info["tag"], model_version=info["version"])

    @bentoml.api(route="/score")
    async def score(self, ctx: bentoml.Context, rows: list[dict] | None = None,
                    entity_ids: list[str | int] | None = None) -> ScoreResponse:
        info = await self._describe()
        try:
            if info["task"] != "tabular":
                raise RequestError(f"{info['tag']} scores no table rows", "send texts to /classify (or queries to "
                                   "/rerank)")
            if entity_ids is not None:
                rows = await asyncio.to_thread(self._online_features(info).rows, entity_ids)
            check_rows(rows, info["columns"], info["numeric"])
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

    @bentoml.api(route="/feedback")
    async def feedback(self, label: str, ctx: bentoml.Context, request_id: str | None = None, index: int = 0,
                       text: str | None = None, comment: str | None = None,
                       step: str | None = None) -> FeedbackResponse:
        info = await self._describe()
        try:
            if step is not None:
                raise RequestError("`step` is for chains; this service serves one student", "leave `step` out")
            feedback_id = await asyncio.to_thread(  # the commit waits for an fsync: off the event loop
                self.feedback_store.add, label, info["labels"], text=text, request_id=request_id, index=index,
                comment=comment, principal=principal_of(ctx),
                idempotency_key=ctx.request.headers.get(IDEMPOTENCY_HEADER), model_tag=info["tag"])
        except RequestError as err:
            return unprocessable(err, ctx)
        except Unavailable as err:
            return unavailable(err, ctx)
        return FeedbackResponse(feedback_id=feedback_id, model_tag=info["tag"], model_version=info["version"])


Student.add_asgi_middleware(SecurityMiddleware, config=CONFIG)
