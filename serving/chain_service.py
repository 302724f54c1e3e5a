"""The chain service: several students in one ``/classify``, each step routed on an earlier step's answer.

Each step's student is its own BentoML service (a classifier's, ``serving/model_service.py``) that this one depends on, so
``bentoml serve`` runs each in its own workers and a deployment can scale each on its own. Configured by
``$STILLHOUSE_SERVE_CONFIG`` with ``chain:`` naming the chain spec (``stillhouse serve --chain FILE``).
"""

from __future__ import annotations

import asyncio

import bentoml

from stillhouse.errors import RequestError, Unavailable
from stillhouse.serve.chain import CHAIN_ROUTE, load_chain, run_chain
from stillhouse.serve.config import ServeConfig, load_serve_config
from stillhouse.serve.feedback import FeedbackStore
from stillhouse.serve.schemas import (
    FEEDBACK_ROUTE,
    ChainResponse,
    FeedbackResponse,
    Prediction,
    StepResult,
    check_classify,
    check_feedback,
)
from stillhouse.serving.middleware import (
    IDEMPOTENCY_HEADER,
    SecurityMiddleware,
    principal_of,
    remember_request,
    unavailable,
    unprocessable,
)
from stillhouse.serving.model_service import SERVICE_OPTIONS, call_model, classifier_model

CONFIG: ServeConfig = load_serve_config()
CHAIN = load_chain(CONFIG.chain)
STEP_SERVICES = {step.name: classifier_model(f"stillhouse-chain-{step.name}", step.model, CONFIG.batching,
                                             CONFIG.warmup_texts) for step in CHAIN.steps}


class ChainBase:
    def __init__(self) -> None:
        self.feedback_store = FeedbackStore(CONFIG.feedback.location, CONFIG.feedback.keep_requests)
        self.info: dict[str, dict] | None = None

    def step_model(self, name: str):
        return getattr(self, f"step_{name}")

    async def _describe(self) -> dict[str, dict]:
        if self.info is None:
            infos = await asyncio.gather(*(call_model(self.step_model(step.name).to_async.describe)
                                           for step in CHAIN.steps))
            info = {step.name: answer for step, answer in zip(CHAIN.steps, infos)}
            CHAIN.check_labels({name: answer["labels"] for name, answer in info.items()})
            self.info = info
        return self.info

    async def __is_ready__(self) -> bool:
        try:
            await self._describe()
        except Exception:  # noqa: BLE001 - a step not reachable yet is exactly "not ready"
            return False
        return True

    @bentoml.api(route="/classify")
    async def classify(self, texts: list[str], ctx: bentoml.Context) -> ChainResponse:
        info = await self._describe()

        async def predict(step: str, chosen: list[str]) -> list[dict]:
            return await call_model(self.step_model(step).to_async.predict, chosen)

        outputs = await run_chain(CHAIN, texts, predict)
        tags = [info[s.name]["tag"] for s in CHAIN.steps]
        await remember_request(self.feedback_store, ctx, texts, ",".join(tags))
        steps = [StepResult(step=name, model_tag=info[name]["tag"], model_version=info[name]["version"],
                            results=[Prediction(**r) if r else None for r in results])
                 for name, results in outputs.items()]
        return ChainResponse(chain=CHAIN.name, steps=steps, model_tag=",".join(tags),
                             model_version=",".join(info[s.name]["version"] for s in CHAIN.steps))

    @bentoml.api(route="/feedback")
    async def feedback(self, label: str, ctx: bentoml.Context, step: str | None = None,
                       request_id: str | None = None, index: int = 0, text: str | None = None,
                       comment: str | None = None) -> FeedbackResponse:
        info = await self._describe()
        try:
            if step not in info:
                raise RequestError("`step` is missing or not a step of this chain",
                                   f"name the corrected step: one of {list(info)}")
            feedback_id = await asyncio.to_thread(
                self.feedback_store.add, label, info[step]["labels"], text=text, request_id=request_id, index=index,
                comment=comment, principal=principal_of(ctx),
                idempotency_key=ctx.request.headers.get(IDEMPOTENCY_HEADER),
                model_tag=info[step]["tag"])
        except RequestError as err:
            return unprocessable(err, ctx)
        except Unavailable as err:
            return unavailable(err, ctx)
        return FeedbackResponse(feedback_id=feedback_id, model_tag=info[step]["tag"],
                                model_version=info[step]["version"])


Chain = bentoml.service(name=f"stillhouse-chain-{CHAIN.name}", **SERVICE_OPTIONS)(
    type("Chain", (ChainBase,), {f"step_{name}": bentoml.depends(svc) for name, svc in STEP_SERVICES.items()}))
Chain.add_asgi_middleware(SecurityMiddleware, config=CONFIG,
                         checks={CHAIN_ROUTE: check_classify, FEEDBACK_ROUTE: check_feedback})
