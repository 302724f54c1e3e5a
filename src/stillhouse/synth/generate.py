"""Generating synthetic rows with the generator the spec chooses: a local LLM, an endpoint, or augmentation.

Every generator returns the same frame: ``text``, ``label`` (the label the row was written for) and
``generator``. What the rows are *worth* is decided afterwards, by the teacher and the filters.
"""

from __future__ import annotations

import time

import pandas as pd

from stillhouse.progress import say
from stillhouse.spec import SynthesisSpec
from stillhouse.synth.augment import augment
from stillhouse.synth.prompts import clean_generation, generation_requests
from stillhouse.teachers.causal_lm import chat_prompt, generate_texts, load_causal_lm
from stillhouse.teachers.endpoint import OpenAIEndpoint


def _llm_texts(synthesis: SynthesisSpec, prompts: list[str], seed_value: int, device: str) -> list[str]:
    model, tokenizer = load_causal_lm(synthesis.llm.model, synthesis.llm.gguf_file, device)
    return generate_texts(model, tokenizer, [chat_prompt(tokenizer, p) for p in prompts],
                          temperature=synthesis.temperature, top_p=synthesis.top_p,
                          max_new_tokens=synthesis.max_new_tokens, batch_size=synthesis.llm.batch_size,
                          seed=seed_value, desc=f"synthesis: {synthesis.llm.model} writing {len(prompts)} rows")


def _endpoint_texts(synthesis: SynthesisSpec, prompts: list[str], seed_value: int) -> list[str]:
    say(f"synthesis: {len(prompts)} prompts to {synthesis.endpoint.url} ({synthesis.endpoint.model})")
    with OpenAIEndpoint(synthesis.endpoint) as endpoint:
        return endpoint.map(lambda item: endpoint.chat(item[1], temperature=synthesis.temperature,
                                                       top_p=synthesis.top_p, max_tokens=synthesis.max_new_tokens,
                                                       seed=seed_value + item[0]), list(enumerate(prompts)))


def generate_prompted(synthesis: SynthesisSpec, prompts: list[str], seed_value: int,
                      device: str = "cpu") -> list[str]:
    """One completion per prompt from the spec's LLM generator (local ``llm`` or ``endpoint``)."""
    if synthesis.generator == "llm":
        return _llm_texts(synthesis, prompts, seed_value, device)
    return _endpoint_texts(synthesis, prompts, seed_value)


def generate_synthetic(synthesis: SynthesisSpec, seed: pd.DataFrame, labels: list[str], seed_value: int,
                       device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """``per_label`` generated rows per label, and generation stats (rows, seconds, rows per second)."""
    started = time.perf_counter()
    if synthesis.generator == "augment":
        frame = augment(seed, labels, synthesis.per_label, synthesis.augment, seed_value)
    else:
        requests = generation_requests(synthesis, seed, labels, seed_value)
        prompts = [prompt for _, prompt in requests]
        raw = generate_prompted(synthesis, prompts, seed_value, device)
        frame = pd.DataFrame({"text": [clean_generation(t, labels) for t in raw], "label": [label for label, _ in requests],
                              "generator": synthesis.generator})
    seconds = time.perf_counter() - started
    stats = {"generator": synthesis.generator, "generated": len(frame), "seconds": round(seconds, 2),
             "rows_per_s": round(len(frame) / seconds, 2) if seconds > 0 else None}
    return frame, stats
