"""How alike two texts are, for near-duplicate and privacy checks: cosine similarity of character n-gram counts.

Character 3-5-grams (within word boundaries, log-scaled counts, no IDF: the similarity of two texts depends on
those two texts only) see a copied record through small edits (a changed digit, a
dropped word, different casing) that exact matching misses, need no model, and give the same answer on every
machine. Case and punctuation are ignored. ``1 - similarity`` is the *distance* the privacy threshold is
stated in: 0 for a copy (up to case and punctuation), about 0.11 for one word changed in a short sentence,
about 0.22 for a clause dropped, above 0.45 for a different sentence on the same topic.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

_CHUNK = 1024  # rows per sparse product: bounds memory to CHUNK x len(references)


def _normalise(text: str) -> str:
    # Punctuation and case carry no content here; left in, a rare "?" n-gram outweighs a shared sentence.
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text.lower())).strip()


def _vectorizer(texts: list[str]) -> TfidfVectorizer:
    # No IDF: with it, the similarity of two texts would depend on which other texts were in the batch, and a
    # filter and a validation suite that look at different batches could disagree about the same row.
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), preprocessor=_normalise, use_idf=False,
                           sublinear_tf=True).fit(texts)


def nearest_similarity(queries: list[str], references: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the highest cosine similarity to any reference and that reference's index.

    Returns ``(similarity [len(queries)], index [len(queries)])``; with no references, similarity 0 and index -1.
    """
    if not queries or not references:
        return np.zeros(len(queries)), np.full(len(queries), -1)
    vectorizer = _vectorizer(list(queries) + list(references))
    q, r = vectorizer.transform(queries), vectorizer.transform(references)
    best, where = np.zeros(len(queries)), np.zeros(len(queries), dtype=int)
    for start in range(0, len(queries), _CHUNK):
        sims = (q[start:start + _CHUNK] @ r.T).toarray()
        where[start:start + _CHUNK] = sims.argmax(1)
        best[start:start + _CHUNK] = sims.max(1)
    return np.clip(best, 0.0, 1.0), where


def nearest_other_similarity(texts: list[str]) -> np.ndarray:
    """``[n]``: each text's highest similarity to any *other* text in the list (0 for a single text)."""
    if len(texts) < 2:
        return np.zeros(len(texts))
    matrix = _vectorizer(list(texts)).transform(texts)
    best = np.zeros(len(texts))
    for start in range(0, len(texts), _CHUNK):
        sims = (matrix[start:start + _CHUNK] @ matrix.T).toarray()
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -1.0
        best[start:start + _CHUNK] = sims.max(1)
    return np.clip(best, 0.0, 1.0)


def greedy_near_duplicates(texts: list[str], threshold: float) -> np.ndarray:
    """``[n]`` bool: True for a text whose similarity to an *earlier kept* text is >= ``threshold``.

    Keeps the first of each group of near-duplicates (generation order), so dropping the flagged rows leaves
    no pair above the threshold.
    """
    flagged = np.zeros(len(texts), dtype=bool)
    if len(texts) < 2:
        return flagged
    matrix = _vectorizer(list(texts)).transform(texts)
    for start in range(0, len(texts), _CHUNK):
        sims = (matrix[start:start + _CHUNK] @ matrix.T).toarray()
        for offset, row in enumerate(sims):
            i = start + offset
            if not flagged[i]:
                later = np.flatnonzero(row[i + 1:] >= threshold) + i + 1
                flagged[later] = True
    return flagged
