"""Metrics against small cases worked out by hand."""

import math

import numpy as np
import pytest

from stillhouse.evaluate.metrics import (accuracy, calibration_bins, classification_metrics, confusion_matrix,
                                         expected_calibration_error, macro_f1, negative_log_likelihood, softmax)


def test_accuracy_and_macro_f1():
    y = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    assert accuracy(y, pred) == pytest.approx(0.6)
    # label 0: tp1 fp1 fn1 → F1 .5; label 1: tp2 fp1 fn0 → .8; label 2: tp0 fn1 → 0. Mean = 1.3/3.
    assert macro_f1(y, pred, 3) == pytest.approx(1.3 / 3)


def test_macro_f1_matches_sklearn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert macro_f1(y, pred, 5) == pytest.approx(f1_score(y, pred, average="macro"))


def test_ece_hand_computed():
    # Two rows at confidence 0.9 (one right) and two at 0.6 (both right), 10 bins:
    # bin (0.8, 0.9]: |0.5 - 0.9| * 2/4 = 0.2 ; bin (0.5, 0.6]: |1.0 - 0.6| * 2/4 = 0.2 → ECE 0.4.
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, y, bins=10) == pytest.approx(0.4)
    counts = [b["count"] for b in calibration_bins(probs, y, bins=10)]
    assert sum(counts) == 4 and counts[8] == 2 and counts[5] == 2


def test_perfectly_calibrated_model_has_zero_ece():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([0, 1])) == pytest.approx(0.0)


def test_nll_and_softmax():
    probs = softmax(np.array([[0.0, 0.0], [math.log(3), 0.0]]))
    assert probs[1] == pytest.approx([0.75, 0.25])
    assert negative_log_likelihood(probs, np.array([0, 1])) == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)


def test_confusion_matrix_rows_are_gold():
    m = confusion_matrix(np.array([0, 0, 1]), np.array([1, 0, 1]), 2)
    assert m.tolist() == [[1, 1], [0, 1]]


def test_agreement_with_teacher_is_reported():
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    out = classification_metrics(logits, np.array([0, 1, 1]), reference_pred=np.array([0, 0, 0]))
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["agreement_with_teacher"] == pytest.approx(2 / 3)
