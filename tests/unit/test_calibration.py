"""Temperature scaling: the NLL it minimises, the temperature it finds, and when serving applies it."""

import math

import numpy as np
import pytest

from stillhouse.evaluate.calibration import calibrate, fit_temperature, temperature_nll
from stillhouse.evaluate.metrics import expected_calibration_error, softmax


def test_temperature_nll_hand_computed():
    logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 0])
    # T = 2: row 1 → p(0) = σ(1), row 2 → p(0) = σ(−0.5)
    expected = -(math.log(1 / (1 + math.exp(-1.0))) + math.log(1 / (1 + math.exp(0.5)))) / 2
    assert temperature_nll(logits, y, 2.0) == pytest.approx(expected, rel=1e-9)


def _sampled(n: int, classes: int, true_temperature: float, seed: int = 0):
    """Logits and labels drawn from softmax(logits / true_temperature): the right temperature is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(n, classes))
    probs = softmax(logits, true_temperature)
    y = np.array([rng.choice(classes, p=p) for p in probs])
    return logits, y


def test_fit_recovers_the_temperature_the_labels_were_drawn_with():
    logits, y = _sampled(20000, 4, 3.0)
    assert fit_temperature(logits, y) == pytest.approx(3.0, rel=0.05)


def test_overconfident_model_is_softened_and_served_calibrated():
    logits, y = _sampled(3000, 5, 2.5, seed=1)
    result = calibrate(logits, y, bins=15, folds=5, seed=0)
    assert result["applied"] is True
    assert result["temperature"] == pytest.approx(2.5, rel=0.1)
    assert result["ece_after"] < result["ece_before"] / 2
    assert result["nll_after"] < result["nll_before"]
    assert len(result["fold_temperatures"]) == 5
    # argmax (accuracy) is untouched by a positive temperature
    assert (softmax(logits, result["temperature"]).argmax(1) == logits.argmax(1)).all()
    # the out-of-fold reliability bins describe the same rows
    assert sum(b["count"] for b in result["bins_after"]) == len(y)


def test_after_figures_are_out_of_fold_not_fitted_on_the_rows_they_measure():
    logits, y = _sampled(400, 3, 2.0, seed=2)
    result = calibrate(logits, y, bins=10, folds=4, seed=0)
    in_sample = expected_calibration_error(softmax(logits, result["temperature"]), y, 10)
    assert result["ece_after"] != pytest.approx(in_sample, abs=1e-12)


def test_not_applied_when_it_does_not_help_out_of_fold():
    # Every 2-fold split leaves the class-1 row's fold fitted on class-0 rows only: T hits its lower bound and
    # that row's NLL explodes, so the out-of-fold NLL is worse than the raw one.
    logits = np.array([[1.0, 0.0]] * 4)
    y = np.array([0, 0, 0, 1])
    result = calibrate(logits, y, bins=5, folds=2, seed=0)
    assert result["applied"] is False
    assert result["temperature"] == 1.0
    assert "did not lower the out-of-fold NLL" in result["reason"]


def test_none_and_too_few_rows_serve_the_models_own_probabilities():
    logits, y = _sampled(50, 3, 2.0)
    off = calibrate(logits, y, bins=5, method="none")
    assert (off["applied"], off["temperature"], off["ece_after"]) == (False, 1.0, off["ece_before"])
    tiny = calibrate(logits[:3], y[:3], bins=5, folds=5)
    assert tiny["applied"] is False and "too few held-out rows (3)" in tiny["reason"]


def test_resampled_ece_matches_the_reported_one_and_the_reduction_interval_has_a_verdict():
    from stillhouse.evaluate.calibration import _ece_fast, improvement_intervals

    logits, y = _sampled(800, 4, 3.0, seed=3)
    raw, scaled = softmax(logits), softmax(logits, 3.0)
    assert _ece_fast(raw.max(1), (raw.argmax(1) == y).astype(float), 15) == pytest.approx(
        expected_calibration_error(raw, y, 15), abs=1e-12)
    out = improvement_intervals(raw, scaled, y, bins=15, seed=0, resamples=300)
    for key in ("ece_reduction", "nll_reduction"):
        r = out[key]
        assert r["low"] <= r["difference"] <= r["high"] and r["verdict"] == "better"  # T = 3 is the truth here
    same = improvement_intervals(raw, raw, y, bins=15, seed=0, resamples=100)
    assert same["nll_reduction"]["difference"] == 0 and same["nll_reduction"]["verdict"] == "within noise"
