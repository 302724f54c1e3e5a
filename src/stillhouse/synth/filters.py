"""Filters that decide which synthetic rows a student may learn from: pure functions of texts and probabilities.

A generator writes rows *meant* for a label; the teacher then soft-labels them. A row is dropped, for the
first reason that applies, when it is the wrong length, it talks about the prompt instead of being an example
("Here is a new tweet labelled ..."), it names the label it was written for (the prompt's label word leaking
into the text: "A Bearish news update: ..." teaches the student a cue real rows rarely carry), the teacher is
unsure about it (low confidence), the teacher reads it as another label than the one intended (disagreement:
the generator missed), it repeats an earlier row exactly or nearly, or it is too close to a seed row
(privacy: a generator that copies its few-shot examples leaks seed records into training data).
Near-duplicate and privacy thresholds are the synthetic suite's (``validation.synthetic``), so what the filter
keeps is what the suite accepts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from stillhouse.synth.similarity import greedy_near_duplicates, nearest_similarity

REASONS = ("length", "prompt_echo", "names_its_label", "low_confidence", "disagrees_with_intended_label",
           "exact_duplicate", "near_duplicate", "too_close_to_seed")


@dataclass(frozen=True)
class FilterThresholds:
    """The thresholds :func:`filter_synthetic` applies (from ``synthesis.filters`` and ``validation``)."""

    min_confidence: float = 0.5
    require_agreement: bool = True
    drop_label_mentions: bool = True
    max_near_duplicate_similarity: float = 0.9
    min_seed_distance: float = 0.2
    min_text_length: int = 2
    max_text_length: int = 20_000


def length_mask(texts: list[str], min_length: int, max_length: int) -> np.ndarray:
    """``[n]`` bool, True where ``min_length <= len(text) <= max_length`` (after stripping)."""
    return np.array([min_length <= len(t.strip()) <= max_length for t in texts], dtype=bool)


# A small instruction model often answers about the task instead of doing it ("Here is a new tweet labelled
# ...", "Write a tweet that is not labelled ..."): such rows describe the prompt, not the domain.
_ECHO = re.compile(r"\blabell?ed\b|^\s*(?:write|generate)\b", re.I)


def prompt_echo_mask(texts: list[str]) -> np.ndarray:
    """``[n]`` bool, True where a text talks about the prompt ("labelled", or starts "Write ...") rather than
    being an example."""
    return np.array([bool(_ECHO.search(t)) for t in texts], dtype=bool)


def label_mention_mask(texts: list[str], intended: np.ndarray, labels: list[str]) -> np.ndarray:
    """``[n]`` bool, True where a text contains the name of the label it was written for (``intended`` ``[n]``
    indexes ``labels``) as whole words, ignoring case; ``_`` and ``-`` in a label name match a space."""
    words = [re.split(r"[\s_-]+", label.strip()) for label in labels]
    patterns = [re.compile(r"\b" + r"[\s_-]+".join(map(re.escape, w)) + r"\b", re.I) for w in words]
    return np.array([bool(patterns[i].search(t)) for t, i in zip(texts, intended)], dtype=bool)


def confidence_mask(probs: np.ndarray, min_confidence: float) -> np.ndarray:
    """``[n]`` bool, True where the teacher's top probability (``probs`` ``[n, K]``) is at least ``min_confidence``."""
    return probs.max(axis=1) >= min_confidence


def agreement_mask(probs: np.ndarray, intended: np.ndarray) -> np.ndarray:
    """``[n]`` bool, True where the teacher's top label is the ``[n]`` intended label index."""
    return probs.argmax(axis=1) == intended


def normalise_text(text: str) -> str:
    """Case- and whitespace-insensitive form used for exact-duplicate detection."""
    return re.sub(r"\s+", " ", text.strip().lower())


def exact_duplicate_mask(texts: list[str], known: list[str] = ()) -> np.ndarray:
    """``[n]`` bool, True for a text (normalised) seen earlier in ``texts`` or anywhere in ``known``."""
    seen = {normalise_text(t) for t in known}
    flagged = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        key = normalise_text(text)
        flagged[i] = key in seen
        seen.add(key)
    return flagged


def seed_distance(texts: list[str], seed_texts: list[str]) -> np.ndarray:
    """``[n]`` distance from each text to its nearest seed row: 1 - cosine of character 3–5-gram count vectors
    (:mod:`stillhouse.synth.similarity`)."""
    similarity, _ = nearest_similarity(texts, seed_texts)
    return 1.0 - similarity


def filter_synthetic(texts: list[str], intended: np.ndarray, probs: np.ndarray, distance_to_seed: np.ndarray,
                     thresholds: FilterThresholds, labels: list[str] | None = None) -> np.ndarray:
    """The reason each synthetic row is dropped (``""`` where it is kept), ``[n]`` of str.

    ``intended`` ``[n]``: label index the generator was asked for; ``probs`` ``[n, K]``: the teacher's
    probabilities; ``distance_to_seed`` ``[n]``: from :func:`seed_distance`; ``labels``: the label names, for
    the label-mention check (skipped when None or ``thresholds.drop_label_mentions`` is off). Each row gets
    the first reason in :data:`REASONS` that applies; duplicate checks only compare rows still kept, so the
    first of a group of near-duplicates survives.
    """
    reasons = np.full(len(texts), "", dtype=object)

    def drop(mask: np.ndarray, reason: str) -> None:
        reasons[(reasons == "") & mask] = reason

    drop(~length_mask(texts, thresholds.min_text_length, thresholds.max_text_length), "length")
    drop(prompt_echo_mask(texts), "prompt_echo")
    if labels is not None and thresholds.drop_label_mentions:
        drop(label_mention_mask(texts, intended, labels), "names_its_label")
    drop(~confidence_mask(probs, thresholds.min_confidence), "low_confidence")
    if thresholds.require_agreement:
        drop(~agreement_mask(probs, intended), "disagrees_with_intended_label")
    # Privacy before duplicates: a copied seed row must be reported as such, not as a duplicate of a copy.
    drop(distance_to_seed < thresholds.min_seed_distance, "too_close_to_seed")
    alive = np.flatnonzero(reasons == "")
    kept_texts = [texts[i] for i in alive]
    drop(_scatter(exact_duplicate_mask(kept_texts), alive, len(texts)), "exact_duplicate")
    alive = np.flatnonzero(reasons == "")
    kept_texts = [texts[i] for i in alive]
    drop(_scatter(greedy_near_duplicates(kept_texts, thresholds.max_near_duplicate_similarity), alive, len(texts)),
         "near_duplicate")
    return reasons


def _scatter(mask: np.ndarray, positions: np.ndarray, size: int) -> np.ndarray:
    full = np.zeros(size, dtype=bool)
    full[positions] = mask
    return full


def reason_counts(reasons: np.ndarray) -> dict[str, int]:
    """``{"kept": n, "<reason>": n, ...}`` for every reason in :data:`REASONS` (zeros included)."""
    counts = {"kept": int((reasons == "").sum())}
    counts.update({reason: int((reasons == reason).sum()) for reason in REASONS})
    return counts
