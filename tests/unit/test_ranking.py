"""Ranking losses and metrics against values computed by hand (the formulas in their docstrings)."""

import math

import pytest
import torch

from stillhouse.distill.losses import (listwise_ce, listwise_kl, margin_mse, pairwise_logistic, pointwise_bce,
                                       pointwise_kl, ranking_loss)
from stillhouse.tasks.reranking.metrics import mrr_at_k, ndcg_at_k, rank_ids, ranking_metrics, recall_at_k

LN3 = math.log(3)
# KL(Bernoulli(.75) || Bernoulli(.5)) = KL([.75, .25] || [.5, .5])
KL_75_50 = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_listwise_kl_matches_the_hand_value_and_ignores_padding():
    mask = torch.tensor([[True, True, False]])
    # teacher softmax [.75, .25], student uniform; the padded third candidate must not count
    value = listwise_kl(t([0.0, 0.0, 9.0]), t([LN3, 0.0, -9.0]), mask, temperature=1.0)
    assert value.item() == pytest.approx(KL_75_50, abs=1e-6)
    p = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]  # softmax([ln 3 / 2, 0])
    expected = 4 * sum(pi * math.log(pi / 0.5) for pi in p)
    assert listwise_kl(t([0.0, 0.0, 0.0]), t([LN3, 0.0, 0.0]), mask, 2.0).item() == pytest.approx(expected, abs=1e-6)


def test_listwise_kl_is_zero_when_student_matches_teacher_up_to_a_shift():
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert listwise_kl(t([1.0, 2.0, 3.0]), t([11.0, 12.0, 13.0]), mask, 1.0).item() == pytest.approx(0, abs=1e-6)


def test_pointwise_kl_is_the_binary_kl_of_the_relevance_probabilities():
    mask = torch.tensor([[True, True]])
    value = pointwise_kl(t([0.0, 2.0]), t([LN3, 2.0]), mask, temperature=1.0)
    assert value.item() == pytest.approx(KL_75_50 / 2, abs=1e-6)  # second pair agrees: 0; mean over two


def test_margin_mse_averages_every_candidate_pair():
    # pairs (0,1): (1-0)-(3-1) = -1; (0,2): 1-3 = -2; (1,2): 0-1 = -1  → (1 + 4 + 1) / 3
    assert margin_mse(t([1.0, 0.0, 0.0]), t([3.0, 1.0, 0.0]), torch.ones(1, 3, dtype=torch.bool)).item() == \
        pytest.approx(2.0)
    assert margin_mse(t([1.0, 0.0, 0.0]), t([3.0, 1.0, 0.0]), torch.tensor([[True, True, False]])).item() == \
        pytest.approx(1.0)


def test_listwise_ce_against_binary_and_graded_judgments():
    mask = torch.ones(1, 3, dtype=torch.bool)
    scores = t([LN3, 0.0, 0.0])  # softmax [.6, .2, .2]
    assert listwise_ce(scores, t([1.0, 0.0, 0.0]), mask).item() == pytest.approx(-math.log(0.6), abs=1e-6)
    graded = -(2 / 3 * math.log(0.6) + 1 / 3 * math.log(0.2))
    assert listwise_ce(scores, t([2.0, 1.0, 0.0]), mask).item() == pytest.approx(graded, abs=1e-6)
    assert listwise_ce(scores, t([0.0, 0.0, -1.0]), mask).item() == 0.0


def test_pairwise_logistic_uses_only_judged_pairs_in_grade_order():
    value = pairwise_logistic(t([1.0, 0.0, 2.0]), t([1.0, 0.0, -1.0]), torch.ones(1, 3, dtype=torch.bool))
    assert value.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_pointwise_bce_over_judged_candidates():
    value = pointwise_bce(t([0.0, LN3, 5.0]), t([1.0, 0.0, -1.0]), torch.ones(1, 3, dtype=torch.bool))
    assert value.item() == pytest.approx((math.log(2) - math.log(0.25)) / 2, abs=1e-6)


def test_ranking_loss_mixes_hard_and_soft_on_judged_queries_only():
    mask = torch.ones(2, 2, dtype=torch.bool)
    student, teacher = t([0.0, 0.0], [0.0, 0.0]), t([LN3, 0.0], [LN3, 0.0])
    relevance = t([1.0, 0.0], [-1.0, -1.0])  # first query judged, second unjudged (pool or synthetic)
    value = ranking_loss(student, mask, relevance, teacher, "listwise", "listwise", alpha=0.25, temperature=1.0)
    judged = 0.25 * math.log(2) + 0.75 * KL_75_50
    assert value.item() == pytest.approx((judged + KL_75_50) / 2, abs=1e-6)
    weighted = ranking_loss(student, mask, relevance, teacher, "listwise", "listwise", 0.25, 1.0, t(1.0, 0.5))
    assert weighted.item() == pytest.approx((judged + 0.5 * KL_75_50) / 2, abs=1e-6)
    assert ranking_loss(student, mask, relevance, None, "listwise", "listwise", 0.5, 1.0).item() == \
        pytest.approx(math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match="no query that has a relevant candidate"):
        ranking_loss(student, mask, t([-1.0, -1.0], [0.0, 0.0]), None, "listwise", "listwise", 0.5, 1.0)


def test_losses_give_gradients_that_move_the_student_toward_the_teacher():
    mask = torch.ones(1, 3, dtype=torch.bool)
    teacher = t([2.0, 0.0, -1.0])
    for name in ("listwise", "pointwise", "margin_mse"):
        student = torch.zeros(1, 3, requires_grad=True)
        ranking_loss(student, mask, t([-1.0, -1.0, -1.0]), teacher, "listwise", name, 0.5, 1.0).backward()
        assert student.grad[0, 0] < 0 < student.grad[0, 2], name  # descending raises the teacher's top


def test_rank_ids_orders_by_score_and_keeps_ties_in_given_order():
    assert rank_ids(["x", "y", "z"], [1.0, 2.0, 1.0]) == ["y", "x", "z"]


def test_ndcg_mrr_recall_on_small_cases():
    assert ndcg_at_k(["a", "b", "c"], {"b": 1}) == pytest.approx(1 / math.log2(3))
    assert mrr_at_k(["a", "b", "c"], {"b": 1}) == 0.5
    assert mrr_at_k(["a", "b", "c"], {"b": 1}, k=1) == 0.0
    assert recall_at_k(["a", "b", "c"], {"b": 1}, 1) == 0.0 and recall_at_k(["a", "b", "c"], {"b": 1}, 2) == 1.0
    # graded: DCG = 1 + 3/log2(3); the ideal uses every judged document, also `d` that was not ranked
    dcg = 1 + 3 / math.log2(3)
    ideal = 3 + 2 / math.log2(3) + 1 / 2
    judged = {"a": 1, "b": 3, "d": 2, "e": 0}
    assert ndcg_at_k(["a", "b", "c"], judged) == pytest.approx(dcg / ideal)
    assert recall_at_k(["a", "b", "c"], judged, 3) == pytest.approx(2 / 3)
    assert ndcg_at_k(["b", "d", "a"], judged) == pytest.approx(1.0)


def test_ranking_metrics_average_over_queries_with_a_relevant_judgment():
    rankings = {"q1": ["a", "b"], "q2": ["c", "d"], "q3": ["e"]}
    qrels = {"q1": {"a": 1}, "q2": {"d": 1}, "q3": {"e": 0}}
    metrics = ranking_metrics(rankings, qrels, k=10, recall_ks=(1,))
    assert metrics["queries"] == 2
    assert metrics["mrr@10"] == pytest.approx(0.75)
    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_the_teacher_check_warns_when_the_teacher_is_no_better_than_the_qrels_only_student():
    """As seen on a public QA set: a zero-shot teacher 0.857, the qrels-only student 0.864 — the run must say so."""
    from stillhouse.tasks.reranking.evaluate import _teacher_check, per_query_ndcg

    qrels = {f"q{i}": {"good": 1.0} for i in range(40)}
    top, bottom = ["good", "x", "y"], ["x", "y", "good"]
    rankings = {"teacher": {q: top for q in qrels}, "first_stage": {q: bottom for q in qrels},
                "baseline": {q: top for q in qrels}}
    assert per_query_ndcg(rankings["teacher"], qrels).tolist() == [1.0] * 40
    check = _teacher_check(rankings, qrels, seed=0)
    assert not check["worth_distilling"] and "the qrels-only student" in check["warning"]
    assert "the first stage" not in check["warning"].split("beyond noise")[0]  # it does beat the first stage
    rankings["baseline"] = {q: bottom for q in qrels}
    assert _teacher_check(rankings, qrels, seed=0)["warning"] is None  # better than both beyond noise
