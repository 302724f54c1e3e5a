"""A classifier's service: ``/classify`` and ``/feedback`` for one packaged student, behind the security middleware.

Two BentoML services, so that the model scales on its own (and chains reuse it): the model service holds the
student and batches concurrent calls (adaptive batching); ``Classifier`` is the public front (validation,
feedback, audit) and calls it through ``bentoml.depends``. Configured by the YAML file in
``$STILLHOUSE_SERVE_CONFIG`` (see ``stillhouse.serve.config``)::

    stillhouse serve stillhouse-quickstart-sentiment:latest   # writes the config, runs `bentoml serve` on it
    bentoml serve stillhouse.serving.classification_service:Classifier   # the same, given $STILLHOUSE_SERVE_CONFIG
"""

from __future__ import annotations

import bentoml

from stillhouse.serve.config import ServeConfig, load_serve_config
from stillhouse.serve.schemas import ClassifyResponse, Prediction, check_classify
from stillhouse.serving.front import MODEL_NAME, StudentFront, front_service
from stillhouse.serving.middleware import remember_request
from stillhouse.serving.model_service import call_model, classifier_model

CONFIG: ServeConfig = load_serve_config()
ClassifierModel = classifier_model(MODEL_NAME, CONFIG.model, CONFIG.batching, CONFIG.warmup_texts)


class Classifier(StudentFront):
    config = CONFIG
    model = bentoml.depends(ClassifierModel)

    @bentoml.api(route="/classify")
    async def classify(self, texts: list[str], ctx: bentoml.Context) -> ClassifyResponse:
        info = await self._describe()
        results = await call_model(self.model.to_async.predict, texts)
        await remember_request(self.feedback_store, ctx, texts, info["tag"])
        return ClassifyResponse(results=[Prediction(**r) for r in results], model_tag=info["tag"],
                                model_version=info["version"])


Classifier = front_service(Classifier, CONFIG, "/classify", check_classify)
