"""Post-hoc calibration by temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar ``T`` divides a model's logits before the softmax: ``p = σ(z / T)``. It is chosen to minimise the
negative log-likelihood of gold labels on rows the model never trained on; the argmax, and so accuracy, is
unchanged. Distilled students inherit an over-confident teacher's sharpness, and chain routing
(``when.min_confidence``) and users' thresholds read the probabilities, so this matters in serving.

Where the rows come from: the held-out evaluation set (neither teacher nor students train on it). So that the
reported "after" figures are not fitted on the rows they are measured on, they are **cross-fitted**: the rows
are split into k folds, each fold's probabilities use the temperature fitted on the other k − 1, and ECE and
NLL are computed on these out-of-fold probabilities. The temperature that is served is fitted on all rows,
and applied only when the out-of-fold NLL improves (otherwise ``T = 1``: the model's own probabilities).

Pure functions of arrays: ``logits`` ``[n, classes]``, ``y_true`` ``[n]``.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from stillhouse.evaluate.metrics import (
    calibration_bins,
    expected_calibration_error,
    negative_log_likelihood,
    softmax,
)
from stillhouse.evaluate.uncertainty import RESAMPLES, paired_difference

# T outside [0.05, 20] means the logits carry (almost) no usable scale: bounded so that a fold of all-correct,
# all-confident rows does not drive T to 0 (a one-hot "probability").
T_BOUNDS = (0.05, 20.0)
MIN_ROWS_PER_FOLD = 2


def temperature_nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    """Mean −log σ(z / T)[gold], computed with log-softmax (finite for any logits)."""
    return float(-np.mean(log_softmax(logits / temperature, axis=1)[np.arange(len(y_true)), y_true]))


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The ``T`` in :data:`T_BOUNDS` minimising :func:`temperature_nll` (1-D bounded search over log T: the NLL
    is smooth and unimodal in log T for a fixed set of logits)."""
    low, high = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    result = minimize_scalar(lambda log_t: temperature_nll(logits, y_true, float(np.exp(log_t))),
                             bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def cross_fitted_probabilities(logits: np.ndarray, y_true: np.ndarray, folds: int,
                               seed: int) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold calibrated probabilities ``[n, classes]`` and the temperature fitted for each fold."""
    order = np.random.default_rng(seed).permutation(len(y_true))
    probs = np.zeros_like(logits, dtype=np.float64)
    temperatures = []
    for held in np.array_split(order, folds):
        train = np.setdiff1d(order, held, assume_unique=True)
        temperature = fit_temperature(logits[train], y_true[train])
        probs[held] = softmax(logits[held].astype(np.float64), temperature)
        temperatures.append(temperature)
    return probs, temperatures


def _ece_fast(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """ECE from top-label confidence and correctness (same bins as :func:`calibration_bins`), for resampling."""
    which = np.clip(np.digitize(confidence, np.linspace(0.0, 1.0, bins + 1)[1:-1], right=True), 0, bins - 1)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap).sum() / max(len(confidence), 1))


def improvement_intervals(raw: np.ndarray, calibrated: np.ndarray, y_true: np.ndarray, bins: int, seed: int,
                          resamples: int = RESAMPLES) -> dict:
    """ECE and NLL before − after (positive = calibration helped) with paired-bootstrap 95 % intervals: the same
    resampled rows score both sets of probabilities (``raw`` and ``calibrated`` are ``[n, classes]``)."""
    def ece(y: np.ndarray, probs: np.ndarray) -> float:
        return _ece_fast(probs.max(1), (probs.argmax(1) == y).astype(float), bins)

    def nll(y: np.ndarray, probs: np.ndarray) -> float:
        return negative_log_likelihood(probs, y)

    return {f"{name}_reduction": paired_difference(y_true, raw, calibrated, metric, resamples, seed)
            for name, metric in (("ece", ece), ("nll", nll))}


def calibrate(logits: np.ndarray, y_true: np.ndarray, bins: int, folds: int = 5, seed: int = 0,
              method: str = "temperature") -> dict:
    """Temperature scaling of one model: before/after ECE and NLL, the served temperature and why.

    Returns ``{method, applied, temperature, ece_before, ece_after, nll_before, nll_after, folds,
    fold_temperatures, reason, ece_reduction, nll_reduction}`` (the reductions with paired-bootstrap intervals,
    when fitted) plus ``bins_after`` (the out-of-fold reliability bins, for the report).
    ``temperature`` is what serving divides the logits by (1.0 when not applied).
    """
    raw = softmax(logits.astype(np.float64))
    before = {"ece_before": expected_calibration_error(raw, y_true, bins),
              "nll_before": negative_log_likelihood(raw, y_true)}
    folds = min(folds, len(y_true) // MIN_ROWS_PER_FOLD)
    if method == "none" or folds < 2:
        reason = ("evaluation.calibration is none" if method == "none"
                  else f"too few held-out rows ({len(y_true)}) to cross-fit a temperature")
        return {"method": method, "applied": False, "temperature": 1.0, **before,
                "ece_after": before["ece_before"], "nll_after": before["nll_before"], "folds": 0,
                "fold_temperatures": [], "reason": reason, "bins_after": calibration_bins(raw, y_true, bins)}
    probs, fold_temperatures = cross_fitted_probabilities(logits, y_true, folds, seed)
    after = {"ece_after": expected_calibration_error(probs, y_true, bins),
             "nll_after": negative_log_likelihood(probs, y_true),
             **improvement_intervals(raw, probs, y_true, bins, seed)}
    applied = after["nll_after"] < before["nll_before"]
    temperature = fit_temperature(logits, y_true) if applied else 1.0
    reason = (f"out-of-fold NLL {before['nll_before']:.4f} → {after['nll_after']:.4f}" if applied
              else f"temperature scaling did not lower the out-of-fold NLL ({before['nll_before']:.4f} → "
                   f"{after['nll_after']:.4f}); probabilities left as the model gives them")
    return {"method": method, "applied": applied, "temperature": temperature, **before, **after, "folds": folds,
            "fold_temperatures": fold_temperatures, "reason": reason,
            "bins_after": calibration_bins(probs, y_true, bins)}
