"""What every student's public service has besides its task's route: ``/feedback``, readiness and the model's
description, behind the security middleware.

A task's service module (``classification_service``, ``reranking_service``, ``tabular_service``) subclasses
:class:`StudentFront` with its model service as ``model`` and its one route, and builds it with
:func:`front_service`, which gives the middleware exactly that service's routes to check.
"""

from __future__ import annotations

import asyncio

import bentoml

from stillhouse.errors import RequestError, Unavailable
from stillhouse.serve.config import ServeConfig
from stillhouse.serve.feedback import FeedbackStore
from stillhouse.serve.schemas import FEEDBACK_ROUTE, FeedbackResponse, check_feedback
from stillhouse.serving.middleware import (
    IDEMPOTENCY_HEADER,
    SecurityMiddleware,
    principal_of,
    unavailable,
    unprocessable,
)
from stillhouse.serving.model_service import SERVICE_OPTIONS, call_model

FRONT_NAME = "stillhouse-student"  # every task's public service: the chart and the metrics name it so
MODEL_NAME = "stillhouse-student-model"


class StudentFront:
    """``/feedback`` and readiness for one student; ``config`` and ``model`` are set by the task's subclass."""

    config: ServeConfig
    model: object

    def __init__(self) -> None:
        self.feedback_store = FeedbackStore(self.config.feedback.location, self.config.feedback.keep_requests)
        self.info: dict | None = None

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


def front_service(cls: type, config: ServeConfig, route: str, check):
    """The BentoML service of a task's front ``cls``, behind the security middleware, which checks ``route``'s
    bodies with ``check`` and ``/feedback``'s (any other route is not this service's: BentoML answers 404)."""
    service = bentoml.service(name=FRONT_NAME, **SERVICE_OPTIONS)(cls)
    service.add_asgi_middleware(SecurityMiddleware, config=config, checks={route: check, FEEDBACK_ROUTE: check_feedback})
    return service
