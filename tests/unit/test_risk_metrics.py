"""Binary risk metrics, fairness figures and the promotion gate against small cases computed by hand."""

import math

import numpy as np
import pytest

from stillhouse.evaluate.gate import gate_verdict
from stillhouse.evaluate.risk import (brier_score, cost_threshold, cost_weighted_error, fairness, ks_statistic,
                                      log_loss, risk_metrics, roc_auc)

Y = np.array([0, 0, 1, 1])
P = np.array([0.1, 0.4, 0.35, 0.8])


def test_auc_counts_ordered_pairs_and_half_ties():
    # pairs (neg, pos): (0.1,0.35) ok, (0.1,0.8) ok, (0.4,0.35) wrong, (0.4,0.8) ok → 3/4
    assert roc_auc(Y, P) == pytest.approx(0.75)
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) != roc_auc(np.array([1, 1]), np.array([0.2, 0.3]))


def test_ks_is_the_largest_gap_between_the_class_cdfs():
    # at threshold 0.1: neg cdf 1/2, pos 0 → 0.5; at 0.35: neg 1/2, pos 1/2 → 0; at 0.4: 1 vs 1/2 → 0.5
    assert ks_statistic(Y, P) == pytest.approx(0.5)
    assert ks_statistic(np.array([0, 1]), np.array([0.1, 0.9])) == pytest.approx(1.0)


def test_brier_and_log_loss():
    assert brier_score(Y, P) == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    expected = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert log_loss(Y, P) == pytest.approx(expected)
    assert math.isfinite(log_loss(np.array([1]), np.array([0.0])))


def test_cost_threshold_and_cost_weighted_error():
    assert cost_threshold(5, 1) == pytest.approx(1 / 6)
    flagged = P > 0.5  # only the 0.8 row: one missed positive (cost 5), no false alarm
    assert cost_weighted_error(Y, flagged, 5, 1) == pytest.approx(5 / 4)
    assert cost_weighted_error(Y, P > 0.05, 5, 1) == pytest.approx(2 / 4)  # all flagged: two false alarms


def test_fairness_by_group_with_fairlearn():
    y = np.array([1, 0, 1, 0, 1, 0, 0, 0])
    flagged = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    groups = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    out = fairness(y, flagged, groups, favourable="flagged")
    a, b = out["groups"]["a"], out["groups"]["b"]
    assert a["rows"] == b["rows"] == 4
    assert a["flagged_rate"] == pytest.approx(0.75) and b["flagged_rate"] == pytest.approx(0.25)
    assert a["favourable_rate"] == pytest.approx(0.75) and b["favourable_rate"] == pytest.approx(0.25)
    assert a["tpr"] == pytest.approx(1.0) and b["tpr"] == pytest.approx(0.0)
    assert a["fpr"] == pytest.approx(0.5) and b["fpr"] == pytest.approx(1 / 3)
    assert out["demographic_parity_ratio"] == pytest.approx(0.25 / 0.75)
    assert out["equalized_odds_difference"] == pytest.approx(1.0)  # max(TPR gap 1.0, FPR gap 1/6)


def test_the_parity_ratio_counts_the_favourable_decision():
    """A flag that denies credit: the four-fifths rule compares approval rates (1 − flagged), which give another
    ratio than the flag rates; the equalized-odds difference is the same for a decision and its complement."""
    groups = np.array(["young"] * 4 + ["old"] * 5)
    flagged = np.array([1, 1, 1, 0] + [1, 1, 1, 0, 0])  # flag rates 3/4 and 3/5; approval rates 1/4 and 2/5
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0, 0])
    denied = fairness(y, flagged, groups, favourable="not_flagged")
    granted = fairness(y, flagged, groups, favourable="flagged")
    assert denied["demographic_parity_ratio"] == pytest.approx((1 / 4) / (2 / 5))
    assert granted["demographic_parity_ratio"] == pytest.approx((3 / 5) / (3 / 4))
    assert denied["groups"]["young"]["favourable_rate"] == pytest.approx(1 / 4)
    assert denied["equalized_odds_difference"] == pytest.approx(granted["equalized_odds_difference"])
    with pytest.raises(ValueError, match="favourable"):
        fairness(y, flagged, groups, favourable="approved")


def test_risk_metrics_block():
    out = risk_metrics(Y, P, threshold=cost_threshold(5, 1), false_negative_cost=5, false_positive_cost=1)
    # threshold 1/6 flags 0.35, 0.4 and 0.8: one false alarm (cost 1), no missed positive
    assert out["auc"] == pytest.approx(0.75) and out["flagged_rate"] == pytest.approx(0.75)
    assert out["cost_weighted_error"] == pytest.approx(0.25) and 0 <= out["ece"] <= 1


def test_gate_passes_fails_and_fails_an_unmeasured_figure():
    figures = {"auc": 0.78, "ece": 0.04, "demographic_parity_ratio": 0.85, "equalized_odds_difference": 0.12,
               "auc_loss": 0.005}
    limits = {"min_auc": 0.7, "max_ece": 0.05, "min_demographic_parity_ratio": 0.8,
              "max_equalized_odds_difference": 0.2, "max_auc_loss": 0.01}
    passed = gate_verdict(limits, figures)
    assert passed["verdict"] == "passed" and len(passed["checks"]) == 5
    failed = gate_verdict({**limits, "min_demographic_parity_ratio": 0.9}, figures)
    assert failed["verdict"] == "failed"
    assert [c["limit"] for c in failed["checks"] if not c["passed"]] == ["min_demographic_parity_ratio"]
    # an interval that contains the limit: the verdict stands on the value, the check says it is inconclusive
    shaky = gate_verdict(limits, figures, {"demographic_parity_ratio": [0.62, 0.97],
                                           "equalized_odds_difference": [0.05, 0.18]})
    dp, eo = (next(c for c in shaky["checks"] if c["figure"] == f) for f in ("demographic_parity_ratio",
                                                                             "equalized_odds_difference"))
    assert shaky["verdict"] == "passed" and dp["ci95"] == [0.62, 0.97] and dp["conclusive"] is False
    assert eo["conclusive"] is True and "conclusive" not in shaky["checks"][0]
    unmeasured = gate_verdict({"min_demographic_parity_ratio": 0.8}, {"demographic_parity_ratio": None})
    assert unmeasured["verdict"] == "failed" and unmeasured["checks"][0]["value"] is None
    assert gate_verdict({"min_auc": None}, figures) == {"verdict": "passed", "checks": []}


def test_fairness_intervals_bracket_the_figures_and_agree_with_fairlearn_per_resample():
    from stillhouse.evaluate.risk import fairness, fairness_intervals

    rng = np.random.default_rng(1)
    groups = np.where(rng.uniform(size=400) < 0.2, "young", "old")
    y = rng.uniform(size=400) < np.where(groups == "young", 0.4, 0.28)
    flagged = rng.uniform(size=400) < np.where(y, 0.8, 0.4) + np.where(groups == "young", 0.1, 0.0)
    point = fairness(y, flagged, groups, favourable="not_flagged")
    bounds = fairness_intervals(y, flagged, groups, favourable="not_flagged", seed=0, resamples=2000)
    low, high = bounds["demographic_parity_ratio_ci95"]
    assert low < point["demographic_parity_ratio"] < high and high - low > 0.05  # a small group: a wide interval
    low, high = bounds["equalized_odds_difference_ci95"]
    assert low < point["equalized_odds_difference"] < high
    # one resample of the vectorised counts equals Fairlearn on the same rows
    one = fairness_intervals(y, flagged, groups, favourable="not_flagged", seed=5, resamples=1)
    index = np.random.default_rng(5).integers(0, 400, size=(1, 400))[0]
    again = fairness(y[index], flagged[index], groups[index], favourable="not_flagged")
    assert one["demographic_parity_ratio_ci95"][0] == pytest.approx(again["demographic_parity_ratio"])
    assert one["equalized_odds_difference_ci95"][0] == pytest.approx(again["equalized_odds_difference"])
