"""The BentoML service that holds one packaged student and batches concurrent calls to it.

Student and chain services depend on one of these per student (``bentoml.depends``), so each student runs in
its own worker processes and can be scaled on its own.
"""

from __future__ import annotations

import threading

import bentoml

from stillhouse.serve.config import BatchingConfig

# BentoML's access log is off: it writes the client's URL path verbatim (log flooding, forged lines), and the
# middleware's audit log already records every request without it.
SERVICE_OPTIONS = {"traffic": {"timeout": 60}, "logging": {"access": {"enabled": False}}}
# How callers connect to a model service. BentoML >= 1.4.30 replaces its client session every 100 requests and
# closes the old one with calls still in flight (bentoml/BentoML#5540, #5544): at concurrency 4 about 1 % of calls
# failed or hung until the 60 s timeout. Replaced only by age (new replicas still get traffic after 5 min).
RUNNER_CONNECTION = {"max_requests": 1_000_000_000, "max_age": 300.0}
# Tokens a pruned student read as [UNK] though its tokenizer knew them (distill/prune.py): text it cannot see.
UNKNOWN_TOKENS = bentoml.metrics.Counter(
    name="stillhouse_unknown_tokens", documentation="Tokens a student with a pruned vocabulary read as [UNK]",
    labelnames=["model"])


async def call_model(method, *args):
    """Call a dependency's API, once more if BentoML's proxy dropped the connection under the call.

    When BentoML replaces its session to a dependency (see RUNNER_CONNECTION) calls still on the old one fail
    with a connection error ("Server disconnected", "Connector is closed", "Session is closed"). Classification
    is idempotent, so calling again on the fresh session is safe.
    """
    import aiohttp

    try:
        return await method(*args)
    except aiohttp.ClientConnectionError:
        return await method(*args)
    except RuntimeError as exc:
        if "Session is closed" not in str(exc):
            raise
        return await method(*args)


def student_model_service(name: str, tag: str, batching: BatchingConfig, warmup: list[str]):
    """A BentoML service holding the student ``tag``; chains build one per step."""

    @bentoml.service(name=name, **SERVICE_OPTIONS, runner_connection=RUNNER_CONNECTION)
    class StudentModel:
        def __init__(self) -> None:
            from stillhouse.serve.student import ServedStudent

            self.student = ServedStudent.from_store(tag)
            self.exported, self.exported_lock = 0, threading.Lock()
            # the first call pays tokenizer and allocator set-up, not a user
            if self.student.task == "reranking":
                self.student.score([{"query": text, "passage": text} for text in warmup])
            elif self.student.task == "tabular":
                pre = self.student.model.preprocessor
                self.student.score_rows([{**dict(zip(pre.numeric, pre.medians)),
                                          **{c: (pre.categories[c] or [""])[0] for c in pre.categorical}}])
            else:
                self.student.predict(warmup)
            self.exported = getattr(self.student.model, "unknown_tokens", 0)  # the warm-up's are not a client's

        @bentoml.api(batchable=batching.enabled, max_batch_size=batching.max_batch_size,
                     max_latency_ms=batching.max_latency_ms)
        def predict(self, texts: list[str]) -> list[dict]:
            answers = self.student.predict(texts)
            with self.exported_lock:  # each count the model made is exported once, whichever call exports it
                seen = getattr(self.student.model, "unknown_tokens", 0)
                if seen > self.exported:
                    UNKNOWN_TOKENS.labels(model=self.student.tag).inc(seen - self.exported)
                    self.exported = seen
            return answers

        @bentoml.api(batchable=batching.enabled, max_batch_size=batching.max_batch_size,
                     max_latency_ms=batching.max_latency_ms)
        def score(self, pairs: list[dict]) -> list[float]:
            return self.student.score(pairs)

        @bentoml.api(batchable=batching.enabled, max_batch_size=batching.max_batch_size,
                     max_latency_ms=batching.max_latency_ms)
        def score_rows(self, rows: list[dict]) -> list[dict]:
            return self.student.score_rows(rows)

        @bentoml.api
        def describe(self) -> dict:
            tabular = self.student.task == "tabular"
            return {"tag": self.student.tag, "version": self.student.version, "labels": self.student.labels,
                    "task": self.student.task, "columns": self.student.columns() if tabular else [],
                    "numeric": self.student.model.preprocessor.numeric if tabular else [],
                    "features": (self.student.metadata or {}).get("features")}

    return StudentModel
