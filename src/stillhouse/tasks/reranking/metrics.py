"""Ranking metrics as pure functions: nDCG@k, MRR@k, Recall@k over ranked id lists and graded judgments.

Conventions follow trec_eval (which BEIR's published numbers use): nDCG's gain is the grade itself
(``rel / log2(rank + 1)``), the ideal ranking is built from *all* judged documents of the query (not only the
candidates that were ranked), a grade of 0 is not relevant. Ties in score keep the candidates' given order
(stable sort): a re-ranker that scores everything alike leaves the first-stage order in place.
"""

from __future__ import annotations

import math

import numpy as np


def rank_ids(ids: list[str], scores: np.ndarray) -> list[str]:
    """``ids`` ordered by descending ``scores`` ``[n]``; equal scores keep their given order."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return [ids[i] for i in order]


def dcg(grades: list[float]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(grades) if g > 0)


def ndcg_at_k(ranked: list[str], judged: dict[str, float], k: int = 10) -> float:
    """nDCG@k of one ranked list against ``judged`` (id → grade); 0 when nothing judged is relevant."""
    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([judged.get(doc, 0) for doc in ranked[:k]]) / ideal


def mrr_at_k(ranked: list[str], judged: dict[str, float], k: int = 10) -> float:
    """1 / rank of the first relevant id within the top ``k``, else 0."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if judged.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def recall_at_k(ranked: list[str], judged: dict[str, float], k: int) -> float:
    """Share of the relevant ids that appear in the top ``k``; 0 when nothing judged is relevant."""
    relevant = {doc for doc, grade in judged.items() if grade > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def ranking_metrics(rankings: dict[str, list[str]], qrels: dict[str, dict[str, float]], k: int = 10,
                    recall_ks: tuple[int, ...] = (1, 10, 30)) -> dict[str, float]:
    """Means over the queries of ``rankings`` (query id → ranked ids) that have at least one relevant judgment.

    Returns ``ndcg@k``, ``mrr@k``, ``recall@r`` for each ``r`` in ``recall_ks``, and ``queries`` (how many were
    averaged). Queries without a relevant judgment are left out, as trec_eval leaves out unjudged queries.
    """
    judged = [q for q in rankings if any(g > 0 for g in qrels.get(q, {}).values())]
    out: dict[str, float] = {"queries": len(judged)}
    if not judged:
        return {**out, f"ndcg@{k}": float("nan"), f"mrr@{k}": float("nan"),
                **{f"recall@{r}": float("nan") for r in recall_ks}}
    out[f"ndcg@{k}"] = float(np.mean([ndcg_at_k(rankings[q], qrels[q], k) for q in judged]))
    out[f"mrr@{k}"] = float(np.mean([mrr_at_k(rankings[q], qrels[q], k) for q in judged]))
    for r in recall_ks:
        out[f"recall@{r}"] = float(np.mean([recall_at_k(rankings[q], qrels[q], r) for q in judged]))
    return out
