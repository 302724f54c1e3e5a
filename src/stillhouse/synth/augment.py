"""A generator that needs no LLM: span mixing between seed examples of one label, word dropout and swaps.

Span mixing (the start of one example joined to the end of another of the same label, in the spirit of
SSMix / "mixup for text") makes sentences that are new as wholes, unlike dropout alone, which only makes
near-copies that the privacy filter would (rightly) remove. Dropout and adjacent swaps then add small noise.
Cheap and deterministic for a given ``seed``; its rows are weaker than an LLM's and need the teacher's filter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stillhouse.spec import AugmentSpec


def span_mix(first: list[str], second: list[str], rng: np.random.Generator) -> list[str]:
    """The words of ``first`` up to a random cut in its middle, then ``second`` from a random cut in its middle."""
    cut_a = int(rng.integers(max(1, len(first) // 3), max(2, 2 * len(first) // 3 + 1)))
    cut_b = int(rng.integers(max(0, len(second) // 3), max(1, 2 * len(second) // 3 + 1)))
    return first[:cut_a] + second[cut_b:]


def word_noise(words: list[str], dropout: float, swap: float, rng: np.random.Generator) -> list[str]:
    """Drop each word with probability ``dropout`` (never all of them), then swap adjacent pairs with ``swap``."""
    kept = [w for w in words if rng.random() >= dropout] or words[:1]
    for i in range(len(kept) - 1):
        if rng.random() < swap:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
    return kept


def augment(seed: pd.DataFrame, labels: list[str], per_label: int, options: AugmentSpec, seed_value: int) -> pd.DataFrame:
    """``per_label`` rows per label built from that label's seed rows; columns ``text``, ``label``, ``generator``."""
    rng = np.random.default_rng(seed_value)
    rows = []
    for label in labels:
        texts = [t.split() for t in seed.loc[seed["label"] == label, "text"]]
        for _ in range(per_label):
            a, b = rng.choice(len(texts), size=2, replace=len(texts) < 2)
            words = span_mix(texts[a], texts[b], rng) if a != b else list(texts[a])
            rows.append({"text": " ".join(word_noise(words, options.word_dropout, options.swap, rng)),
                         "label": label, "generator": "augment"})
    return pd.DataFrame(rows, columns=["text", "label", "generator"])
