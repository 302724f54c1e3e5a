"""Binary risk metrics as pure functions of arrays, for scoring models (credit risk, fraud): discrimination
(AUC, KS), probability quality (Brier, log loss), the cost of decisions at a threshold, and fairness across the
groups of a sensitive feature (Fairlearn).

``y`` is ``[n]`` 0/1 with 1 the *positive* (risky) class, e.g. a borrower who defaults; ``p`` is ``[n]`` the
model's probability of the positive class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from stillhouse.evaluate.metrics import expected_calibration_error


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random negative (ties count
    half), from the Mann–Whitney U statistic. NaN when only one class is present."""
    y = np.asarray(y).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(p)  # average ranks: a tie between a positive and a negative counts half
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov–Smirnov: the largest gap between the positives' and the negatives' score distributions (the
    credit-scoring convention for how well a score separates the two)."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    thresholds = np.unique(p)
    positive_cdf = np.searchsorted(np.sort(p[y]), thresholds, side="right") / y.sum()
    negative_cdf = np.searchsorted(np.sort(p[~y]), thresholds, side="right") / (~y).sum()
    return float(np.max(np.abs(positive_cdf - negative_cdf)))


def brier_score(y: np.ndarray, p: np.ndarray) -> float:
    """Mean squared error of the positive-class probability."""
    return float(np.mean((np.asarray(p, dtype=np.float64) - y) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean −log p(outcome), probabilities clipped to [1e-12, 1 − 1e-12] to stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return float(-np.mean(np.where(np.asarray(y) == 1, np.log(p), np.log(1 - p))))


def cost_threshold(false_negative_cost: float, false_positive_cost: float) -> float:
    """The probability above which flagging a row costs less in expectation than passing it: flag when
    ``p · C_fn > (1 − p) · C_fp``, i.e. ``p > C_fp / (C_fp + C_fn)`` (German credit's 5:1 gives 1/6)."""
    return false_positive_cost / (false_positive_cost + false_negative_cost)


def cost_weighted_error(y: np.ndarray, flagged: np.ndarray, false_negative_cost: float,
                        false_positive_cost: float) -> float:
    """Mean cost per row of the decisions ``flagged`` (``[n]`` bool, flagged = predicted positive): a missed
    positive costs ``false_negative_cost``, a flagged negative ``false_positive_cost``."""
    y, flagged = np.asarray(y).astype(bool), np.asarray(flagged).astype(bool)
    return float(np.mean(np.where(y & ~flagged, false_negative_cost, 0.0)
                         + np.where(~y & flagged, false_positive_cost, 0.0)))


def fairness(y: np.ndarray, flagged: np.ndarray, groups: np.ndarray, *, favourable: str) -> dict:
    """Fairlearn's view of the decisions ``flagged`` across ``groups`` (``[n]`` group names): per group the row
    count, the flagged and the favourable rate, true- and false-positive rates of the flag and accuracy
    (``MetricFrame``); the demographic-parity ratio and the equalized-odds difference (the larger of the TPR and
    FPR gaps between groups; the same for a decision and its complement).

    The ratio is Fairlearn's ``demographic_parity_ratio`` of the **favourable** decision — the smallest group rate
    over the largest, the four-fifths rule's figure (≥ 0.8), which counts who is selected, hired or approved.
    ``favourable`` says which decision that is: ``not_flagged`` where the flag denies or refers (a predicted
    default, fraud), ``flagged`` where it grants (an offer). The two ratios differ: approval rates of 25 % and
    40 % give 0.63, their flag rates (75 %, 60 %) 0.80."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        demographic_parity_ratio,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    y, flagged = np.asarray(y).astype(int), np.asarray(flagged).astype(int)
    favoured = _favoured(flagged, favourable).astype(int)
    groups = pd.Series(np.asarray(groups).astype(str), name="group")
    frame = MetricFrame(metrics={"rows": count, "flagged_rate": selection_rate, "tpr": true_positive_rate,
                                 "fpr": false_positive_rate,
                                 "accuracy": lambda t, q: float(np.mean(np.asarray(t) == np.asarray(q)))},
                        y_true=y, y_pred=flagged, sensitive_features=groups)
    by_group = {str(name): {key: int(value) if key == "rows" else _plain(value) for key, value in row.items()}
                for name, row in frame.by_group.to_dict(orient="index").items()}
    for name, row in by_group.items():
        row["favourable_rate"] = None if row["flagged_rate"] is None else float(
            np.mean(favoured[(groups == name).to_numpy()]))
    return {"groups": by_group, "favourable": favourable,
            "demographic_parity_ratio": _plain(demographic_parity_ratio(y, favoured, sensitive_features=groups)),
            "equalized_odds_difference": _plain(equalized_odds_difference(y, flagged, sensitive_features=groups))}


def _favoured(flagged: np.ndarray, favourable: str) -> np.ndarray:
    if favourable not in ("flagged", "not_flagged"):
        raise ValueError(f"favourable must be `flagged` or `not_flagged`, not {favourable!r}")
    flagged = np.asarray(flagged).astype(bool)
    return flagged if favourable == "flagged" else ~flagged


def fairness_intervals(y: np.ndarray, flagged: np.ndarray, groups: np.ndarray, *, favourable: str, seed: int = 0,
                       resamples: int = 1000) -> dict:
    """Bootstrap 95 % intervals (rows resampled, percentile) of the demographic-parity ratio and the
    equalized-odds difference: on a few hundred rows a small group's figures swing widely, and a reader (or a
    gate) should see how far. Resamples where a group has no rows, positives or negatives leave that figure out.
    Computed with NumPy counts (the same definitions as :func:`fairness`), not one MetricFrame per resample."""
    y, flagged = np.asarray(y).astype(bool), np.asarray(flagged).astype(bool)
    names, group = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    k = len(names)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(y), size=(resamples, len(y)))
    offsets = (np.arange(resamples)[:, None] * k + group[index]).ravel()

    def counts(mask: np.ndarray) -> np.ndarray:
        return np.bincount(offsets, weights=mask[index].ravel().astype(float), minlength=resamples * k).reshape(
            resamples, k)

    rows, chosen = counts(np.ones(len(y), bool)), counts(_favoured(flagged, favourable))
    positives, negatives = counts(y), counts(~y)
    true_pos, false_pos = counts(y & flagged), counts(~y & flagged)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = chosen / rows
        ratio = rate.min(1) / rate.max(1)
        tpr, fpr = true_pos / positives, false_pos / negatives
        gap = np.maximum(tpr.max(1) - tpr.min(1), fpr.max(1) - fpr.min(1))

    def interval(values: np.ndarray) -> list[float] | None:
        values = values[np.isfinite(values)]
        return [float(v) for v in np.percentile(values, [2.5, 97.5])] if len(values) else None

    return {"demographic_parity_ratio_ci95": interval(ratio), "equalized_odds_difference_ci95": interval(gap)}


def _plain(value) -> float | None:
    """A JSON-ready number: NaN (a group with no positives has no TPR) becomes None."""
    value = float(value)
    return None if np.isnan(value) else value


def risk_metrics(y: np.ndarray, p: np.ndarray, threshold: float, false_negative_cost: float,
                 false_positive_cost: float, bins: int = 15) -> dict:
    """The quality block of metrics.json for one binary scoring model."""
    probs = np.stack([1 - np.asarray(p, dtype=np.float64), p], axis=1)
    flagged = np.asarray(p) > threshold
    return {"auc": roc_auc(y, p), "ks": ks_statistic(y, p), "brier": brier_score(y, p), "log_loss": log_loss(y, p),
            "ece": expected_calibration_error(probs, np.asarray(y).astype(int), bins), "threshold": threshold,
            "flagged_rate": float(np.mean(flagged)),
            "cost_weighted_error": cost_weighted_error(y, flagged, false_negative_cost, false_positive_cost)}
