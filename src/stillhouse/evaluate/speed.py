"""CPU latency and throughput of classifiers, end to end from text (tokenisation included).

Models are timed *interleaved* — one call to each in turn — so that noise from other work on a shared machine
lands on every model alike and the ratios between them stay meaningful (seen here on Banking77: the same
teacher and 2-layer student timed one after the other gave a batch-1 ratio of 2.04x in one run and 2.40x
timed interleaved on a quiet machine).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from stillhouse.models.classifier import TextClassifier, tokenize


@dataclass(frozen=True)
class Timed:
    """One model to time: the classifier, its tokenizer and its max input length."""

    model: TextClassifier
    tokenizer: object
    max_length: int

    def ready(self) -> None:
        self.model.to("cpu").eval()

    def predict(self, batch: list[str]) -> None:
        enc = tokenize(self.tokenizer, batch, self.max_length)
        self.model(enc["input_ids"], enc["attention_mask"])


@dataclass(frozen=True)
class TimedLogits:
    """A model timed through its ``logits(texts)``: a teacher that is not a single classifier (a prompted LLM,
    an endpoint — the network included —, an ensemble), the classical baseline, or a student in another
    runtime (ONNX Runtime)."""

    model: object

    def ready(self) -> None:
        pass

    def predict(self, batch: list[str]) -> None:
        self.model.logits(batch)


@torch.inference_mode()
def measure_speeds(models: dict[str, Timed | TimedLogits], texts: list[str], samples: int = 100,
                   batch_size: int = 32) -> dict[str, dict]:
    """Per model: p50/p95 latency (ms) of single-text predictions, and texts/s at ``batch_size``.

    Every model sees the same texts (cycling through ``texts``) after a few warm-up calls (the first calls
    pay for allocator and kernel set-up).
    """
    for timed in models.values():
        timed.ready()
        for text in texts[:5]:
            timed.predict([text])
    latencies: dict[str, list[float]] = {name: [] for name in models}
    for i in range(samples):
        for name, timed in models.items():
            start = time.perf_counter()
            timed.predict([texts[i % len(texts)]])
            latencies[name].append((time.perf_counter() - start) * 1000)
    batches = max(3, samples // batch_size)
    elapsed = {name: 0.0 for name in models}
    for i in range(batches):
        batch = [texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)]
        for name, timed in models.items():
            start = time.perf_counter()
            timed.predict(batch)
            elapsed[name] += time.perf_counter() - start
    return {name: {"latency_ms_p50": float(np.percentile(latencies[name], 50)),
                   "latency_ms_p95": float(np.percentile(latencies[name], 95)),
                   "throughput_per_s": batches * batch_size / elapsed[name],
                   "throughput_batch_size": batch_size, "threads": torch.get_num_threads()}
            for name in models}
