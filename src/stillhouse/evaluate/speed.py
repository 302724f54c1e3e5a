"""CPU latency and throughput of a classifier, end to end from text (tokenisation included)."""

from __future__ import annotations

import time

import numpy as np
import torch

from stillhouse.tasks.classification import TextClassifier, tokenize


@torch.inference_mode()
def measure_speed(model: TextClassifier, tokenizer, texts: list[str], max_length: int, samples: int = 100,
                  batch_size: int = 32, threads: int | None = None) -> dict:
    """p50/p95 latency (ms) of single-text predictions and texts/s at ``batch_size``.

    Texts cycle through ``texts`` so both models see the same inputs; a few warm-up calls come first
    (the first calls pay for allocator and kernel set-up).
    """
    if threads:
        torch.set_num_threads(threads)
    model = model.to("cpu").eval()

    def predict(batch: list[str]) -> None:
        enc = tokenize(tokenizer, batch, max_length)
        model(enc["input_ids"], enc["attention_mask"])

    for text in texts[:5]:
        predict([text])
    latencies = []
    for i in range(samples):
        start = time.perf_counter()
        predict([texts[i % len(texts)]])
        latencies.append((time.perf_counter() - start) * 1000)
    batches = max(3, samples // batch_size)
    start = time.perf_counter()
    for i in range(batches):
        predict([texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)])
    elapsed = time.perf_counter() - start
    return {"latency_ms_p50": float(np.percentile(latencies, 50)),
            "latency_ms_p95": float(np.percentile(latencies, 95)),
            "throughput_per_s": batches * batch_size / elapsed,
            "throughput_batch_size": batch_size, "threads": torch.get_num_threads()}
