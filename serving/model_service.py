"""The BentoML service that holds one packaged student and batches concurrent calls to it.

Student and chain services depend on one of these per student (``bentoml.depends``), so each student runs in
its own worker processes and can be scaled on its own.
"""

from __future__ import annotations

import bentoml

from stillhouse.serve.config import BatchingConfig

TRAFFIC = {"timeout": 60}


def student_model_service(name: str, tag: str, batching: BatchingConfig, warmup: list[str]):
    """A BentoML service holding the student ``tag``; chains build one per step."""

    @bentoml.service(name=name, traffic=TRAFFIC)
    class StudentModel:
        def __init__(self) -> None:
            from stillhouse.serve.student import ServedStudent

            self.student = ServedStudent.from_store(tag)
            self.student.predict(warmup)  # first call pays tokenizer and allocator set-up, not a user

        @bentoml.api(batchable=batching.enabled, max_batch_size=batching.max_batch_size,
                     max_latency_ms=batching.max_latency_ms)
        def predict(self, texts: list[str]) -> list[dict]:
            return self.student.predict(texts)

        @bentoml.api
        def describe(self) -> dict:
            return {"tag": self.student.tag, "version": self.student.version, "labels": self.student.labels}

    return StudentModel
