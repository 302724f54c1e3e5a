"""Distillation losses as pure functions (no I/O, no state), unit-tested against hand-computed values.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": the student matches the
teacher's temperature-softened distribution; the T² factor keeps the soft-target gradients on the same
scale as the hard-label ones when T changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``.

    Shapes: logits ``[batch, classes]`` → ``[batch]``.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return temperature**2 * kl


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
                      alpha: float, temperature: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows of the Hinton loss, with rows that have no hard label handled apart.

    - labelled row (``label >= 0``):  ``α·CE(y, softmax(z_s)) + (1−α)·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``
    - unlabelled row (``label == -1``, pool or synthetic): ``T²·KL(...)`` alone — there is no hard label
      to trade it against, so it is not scaled by ``1−α``.
    - ``teacher_logits is None``: plain cross-entropy on the labelled rows (teacher fine-tuning, and the
      hard-label baseline student), weighted by ``weights`` when given (a tabular fairness reweighing).

    ``weights`` ``[batch]`` (optional) scales each row's term; the mean still divides by the number of rows,
    so a weight below 1 makes a row count for less (e.g. synthetic rows, ``distillation.synthetic_weight``)
    instead of being renormalised away in a batch of such rows alone.

    Shapes: ``student_logits`` ``[batch, classes]``, ``labels`` ``[batch]`` (long, −1 = no label),
    ``teacher_logits`` ``[batch, classes]`` or None → scalar.
    """
    labelled = labels >= 0
    ce = F.cross_entropy(student_logits, labels.clamp(min=0), reduction="none")
    if teacher_logits is None:
        if not labelled.any():
            raise ValueError("hard-label training got a batch with no labelled rows")
        return (ce * weights)[labelled].mean() if weights is not None else ce[labelled].mean()
    kl = soft_kl(student_logits, teacher_logits, temperature)
    per_row = torch.where(labelled, alpha * ce + (1 - alpha) * kl, kl)
    if weights is not None:
        per_row = per_row * weights
    return per_row.mean()


def representation_distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor,
                                     teacher_logits: torch.Tensor, alpha: float, temperature: float,
                                     student_embedding: torch.Tensor, teacher_embedding: torch.Tensor,
                                     weight: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`distillation_loss` plus ``weight · (1 − cos(P·s_i, t_i))`` averaged over rows: the student's
    projected sentence embedding ``P·s`` ``[batch, dim]`` is pulled towards the teacher's ``t`` ``[batch, dim]``
    on every row, labelled or not (representation distillation alongside the label loss, in the spirit of
    TinyBERT's and MiniLM's intermediate-layer losses, here at the sentence level that a student of another
    family can share with its teacher). ``weights`` scales both terms of a row alike → scalar."""
    labels_term = distillation_loss(student_logits, labels, teacher_logits, alpha, temperature, weights)
    return labels_term + weight * embedding_cosine(student_embedding, teacher_embedding, weights)


# --- Ranking ------------------------------------------------------------------------------------------------
# A batch is a set of queries, each with its candidate list padded to ``n``: scores ``[queries, n]``, ``mask``
# ``[queries, n]`` (True = a real candidate), ``relevance`` ``[queries, n]`` (judged grade, 0 = not relevant,
# -1 = unjudged). Each function returns one value per query ``[queries]``.

_NEG = -1e4  # stands in for -inf on padded candidates: exp() of it is 0, and 0 * it stays finite (no NaN)


def _masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~mask, _NEG)


def listwise_kl(student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor,
                temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(t/T) ‖ softmax(s/T))`` over each query's candidates (listwise distillation).

    The teacher's distribution over the list carries how much better each candidate is than the others, not
    only their order. Shapes ``[queries, n]`` → ``[queries]``.
    """
    log_p_student = F.log_softmax(_masked(student_scores / temperature, mask), dim=-1)
    log_p_teacher = F.log_softmax(_masked(teacher_scores / temperature, mask), dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).masked_fill(~mask, 0.0).sum(-1)
    return temperature**2 * kl


def pointwise_kl(student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor,
                 temperature: float) -> torch.Tensor:
    """Mean over a query's candidates of ``T² · KL(Bernoulli(σ(t/T)) ‖ Bernoulli(σ(s/T)))``.

    Each (query, passage) pair on its own: the student's relevance probability matches the teacher's. This is
    binary cross-entropy against the teacher's probability minus the teacher's entropy, so it is 0 when the
    two agree. Shapes ``[queries, n]`` → ``[queries]``.
    """
    s, t = student_scores / temperature, teacher_scores / temperature
    p_teacher = torch.sigmoid(t)
    kl = (p_teacher * (F.logsigmoid(t) - F.logsigmoid(s))
          + (1 - p_teacher) * (F.logsigmoid(-t) - F.logsigmoid(-s)))
    return temperature**2 * (kl * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def margin_mse(student_scores: torch.Tensor, teacher_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over a query's candidate pairs ``i < j`` of ``((s_i − s_j) − (t_i − t_j))²``.

    Hofstätter et al. (2020), "Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge
    Distillation": the student matches the teacher's score *margins*, not its scale, so teacher and student
    may score on different scales. Taken over every pair of the list (not one positive and one negative).
    Shapes ``[queries, n]`` → ``[queries]``.
    """
    residual = student_scores - teacher_scores
    diff = residual.unsqueeze(-1) - residual.unsqueeze(-2)  # [q, n, n]: (s_i − t_i) − (s_j − t_j)
    pairs = (mask.unsqueeze(-1) & mask.unsqueeze(-2)).triu(diagonal=1)
    return (diff.pow(2) * pairs).sum((-1, -2)) / pairs.sum((-1, -2)).clamp(min=1)


def listwise_ce(scores: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the softmax over a query's candidates against its judged grades (normalised to sum 1).

    With one relevant candidate this is the localised contrastive loss of Gao et al. (2021), "Rethink Training
    of BERT Rerankers in Multi-Stage Retrieval Pipeline": the relevant passage against the first stage's hard
    negatives. A query with no relevant candidate gives 0. Shapes ``[queries, n]`` → ``[queries]``.
    """
    gains = relevance.clamp(min=0) * mask
    target = gains / gains.sum(-1, keepdim=True).clamp(min=1e-12)
    log_p = F.log_softmax(_masked(scores, mask), dim=-1)
    return -(target * log_p).masked_fill(~mask, 0.0).sum(-1)


def pairwise_logistic(scores: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over a query's pairs with ``grade_i > grade_j`` (both judged) of ``log(1 + exp(−(s_i − s_j)))``.

    RankNet's loss (Burges et al. 2005) on the judged order; 0 for a query with no such pair.
    Shapes ``[queries, n]`` → ``[queries]``.
    """
    judged = mask & (relevance >= 0)
    better = (relevance.unsqueeze(-1) > relevance.unsqueeze(-2)) & judged.unsqueeze(-1) & judged.unsqueeze(-2)
    loss = F.softplus(-(scores.unsqueeze(-1) - scores.unsqueeze(-2)))
    return (loss * better).sum((-1, -2)) / better.sum((-1, -2)).clamp(min=1)


def pointwise_bce(scores: torch.Tensor, relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over a query's judged candidates of the binary cross-entropy of ``σ(s)`` against ``grade > 0``.

    Shapes ``[queries, n]`` → ``[queries]``.
    """
    judged = (mask & (relevance >= 0)).float()
    bce = F.binary_cross_entropy_with_logits(scores, (relevance > 0).float(), reduction="none")
    return (bce * judged).sum(-1) / judged.sum(-1).clamp(min=1)


HARD_RANKING_LOSSES = {"listwise": listwise_ce, "pairwise": pairwise_logistic, "pointwise": pointwise_bce}
SOFT_RANKING_LOSSES = {"listwise": listwise_kl, "pointwise": pointwise_kl,
                       "margin_mse": lambda s, t, mask, temperature: margin_mse(s, t, mask)}


def ranking_loss(student_scores: torch.Tensor, mask: torch.Tensor, relevance: torch.Tensor,
                 teacher_scores: torch.Tensor | None, hard: str, soft: str, alpha: float, temperature: float,
                 weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over queries of the re-ranking loss, the ranking counterpart of :func:`distillation_loss`.

    - query with a judged relevant candidate: ``α·hard + (1−α)·soft``;
    - query without one (unlabelled or synthetic): ``soft`` alone;
    - ``teacher_scores is None``: ``hard`` alone over the queries with a relevant candidate (teacher
      fine-tuning and the qrels-only baseline).

    ``hard`` names a key of :data:`HARD_RANKING_LOSSES`, ``soft`` one of :data:`SOFT_RANKING_LOSSES`;
    ``weights`` ``[queries]`` scales each query's term. Shapes as above → scalar.
    """
    labelled = ((relevance > 0) & mask).any(-1)
    hard_loss = HARD_RANKING_LOSSES[hard](student_scores, relevance, mask)
    if teacher_scores is None:
        if not labelled.any():
            raise ValueError("hard-label ranking loss got a batch with no query that has a relevant candidate")
        return hard_loss[labelled].mean()
    soft_loss = SOFT_RANKING_LOSSES[soft](student_scores, teacher_scores, mask, temperature)
    per_query = torch.where(labelled, alpha * hard_loss + (1 - alpha) * soft_loss, soft_loss)
    if weights is not None:
        per_query = per_query * weights
    return per_query.mean()


def embedding_cosine(student: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Mean over texts of ``1 − cos(student_i, teacher_i)`` (embedding-level distillation).

    A bi-encoder student learns to place each text where the teacher's bi-encoder places it, so the cosine it
    scores a (query, passage) pair with approaches the teacher's (Reimers & Gurevych 2020, "Making Monolingual
    Sentence Embeddings Multilingual using Knowledge Distillation", with a cosine in place of their MSE: only
    directions score). Every text of the corpus carries a teacher target of ``dim`` numbers, not one score per
    pair, and needs no query. Shapes ``[texts, dim]`` (``weights`` ``[texts]``) → scalar.
    """
    per_text = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    if weights is not None:
        per_text = per_text * weights
    return per_text.mean()
