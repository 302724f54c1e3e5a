"""The BentoML services that hold one packaged student each and batch concurrent calls to it.

A student's public service (and a chain) depends on one of these per student (``bentoml.depends``), so each student
runs in its own worker processes and can be scaled on its own. Each task's model service has the task's one verb
(:func:`classifier_model`, :func:`reranker_model`, :func:`tabular_model`) and ``describe``; the student itself is
the task's served student (:func:`stillhouse.serve.stored.load_student`).
"""

from __future__ import annotations

import threading

import aiohttp
import bentoml

from stillhouse.serve.config import BatchingConfig
from stillhouse.serve.stored import load_student

# BentoML's access log is off: it writes the client's URL path verbatim (log flooding, forged lines), and the
# middleware's audit log already records every request without it.
SERVICE_OPTIONS = {"traffic": {"timeout": 60}, "logging": {"access": {"enabled": False}}}
# How callers connect to a model service. BentoML >= 1.4.30 replaces its client session every 100 requests and
# closes the old one with calls still in flight (bentoml/BentoML#5540, #5544): at concurrency 4 about 1 % of calls
# failed or hung until the 60 s timeout. Replaced only by age (new replicas still get traffic after 5 min).
RUNNER_CONNECTION = {"max_requests": 1_000_000_000, "max_age": 300.0}
# Tokens a pruned student read as [UNK] though its tokenizer knew them (models/prune.py): text it cannot see.
UNKNOWN_TOKENS = bentoml.metrics.Counter(
    name="stillhouse_unknown_tokens", documentation="Tokens a student with a pruned vocabulary read as [UNK]",
    labelnames=["model"])


async def call_model(method, *args):
    """Call a dependency's API, once more if BentoML's proxy dropped the connection under the call.

    When BentoML replaces its session to a dependency (see RUNNER_CONNECTION) calls still on the old one fail
    with a connection error ("Server disconnected", "Connector is closed", "Session is closed"). Every model
    verb is idempotent, so calling again on the fresh session is safe.
    """
    try:
        return await method(*args)
    except aiohttp.ClientConnectionError:
        return await method(*args)
    except RuntimeError as exc:
        if "Session is closed" not in str(exc):
            raise
        return await method(*args)


class StudentModel:
    """Holds the packaged student ``tag`` (a class attribute set by :func:`_service`), warmed up on ``warmup``."""

    tag: str
    warmup: list[str]

    def __init__(self) -> None:
        self.student = load_student(self.tag)
        self.student.warm_up(self.warmup)  # the first call pays tokenizer and allocator set-up, not a user

    @bentoml.api
    def describe(self) -> dict:
        return self.student.describe()


def _service(cls: type, name: str, tag: str, warmup: list[str]):
    return bentoml.service(name=name, **SERVICE_OPTIONS, runner_connection=RUNNER_CONNECTION)(
        type(cls.__name__, (cls,), {"tag": tag, "warmup": warmup}))


def _batched(batching: BatchingConfig):
    """The ``@bentoml.api`` of a model's verb: adaptive batching as configured."""
    return bentoml.api(batchable=batching.enabled, max_batch_size=batching.max_batch_size,
                       max_latency_ms=batching.max_latency_ms)


def classifier_model(name: str, tag: str, batching: BatchingConfig, warmup: list[str]):
    """A classifier's model service: ``predict`` (texts → labels and probabilities). Chains build one per step."""

    class ClassifierModel(StudentModel):
        def __init__(self) -> None:
            super().__init__()
            self.exported, self.exported_lock = getattr(self.student.model, "unknown_tokens", 0), threading.Lock()

        @_batched(batching)
        def predict(self, texts: list[str]) -> list[dict]:
            answers = self.student.predict(texts)
            with self.exported_lock:  # each count the model made is exported once, whichever call exports it
                seen = getattr(self.student.model, "unknown_tokens", 0)
                if seen > self.exported:
                    UNKNOWN_TOKENS.labels(model=self.student.tag).inc(seen - self.exported)
                    self.exported = seen
            return answers

    return _service(ClassifierModel, name, tag, warmup)


def reranker_model(name: str, tag: str, batching: BatchingConfig, warmup: list[str]):
    """A re-ranker's model service: ``score`` ((query, passage) pairs → relevance scores)."""

    class RerankerModel(StudentModel):
        @_batched(batching)
        def score(self, pairs: list[dict]) -> list[float]:
            return self.student.score(pairs)

    return _service(RerankerModel, name, tag, warmup)


def tabular_model(name: str, tag: str, batching: BatchingConfig, warmup: list[str]):
    """A tabular student's model service: ``score_rows`` (raw column values → label, probability, reasons)."""

    class TabularModel(StudentModel):
        @_batched(batching)
        def score_rows(self, rows: list[dict]) -> list[dict]:
            return self.student.score_rows(rows)

    return _service(TabularModel, name, tag, warmup)
