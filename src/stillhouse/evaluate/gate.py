"""The promotion gate: limits from ``evaluation.gate`` checked against a run's measured figures.

A limit left unset is not checked. The verdict is ``passed`` only when every set limit holds and every figure
it needs was measured: a figure that could not be measured (no sensitive feature, one class only) fails its
check rather than passing silently.
"""

from __future__ import annotations

import math

# limit name → (figure name, direction): "min" holds when figure ≥ limit, "max" when figure ≤ limit
LIMITS = {
    "min_auc": ("auc", "min"),
    "max_ece": ("ece", "max"),
    "min_demographic_parity_ratio": ("demographic_parity_ratio", "min"),
    "max_equalized_odds_difference": ("equalized_odds_difference", "max"),
    "max_auc_loss": ("auc_loss", "max"),
}


def gate_verdict(limits: dict[str, float | None], figures: dict[str, float | None],
                 intervals: dict[str, list[float] | None] | None = None) -> dict:
    """``{"verdict": "passed" | "failed", "checks": [{limit, figure, threshold, value, passed}]}`` for every set
    limit; ``figures`` maps figure names (``auc``, ``ece``, ``demographic_parity_ratio`` …) to measured values
    (the worst over sensitive features for the fairness figures).

    ``intervals`` (figure → 95 % interval) adds ``ci95`` and ``conclusive`` to a check: whether the interval lies
    wholly on one side of the limit. The verdict still judges the measured value — a small group's figure that
    misses the limit fails, it is not waved through as noise — but a reader sees when too few rows were measured
    to tell a fair model from an unfair one."""
    checks = []
    for limit, threshold in limits.items():
        if threshold is None:
            continue
        figure, direction = LIMITS[limit]
        value = figures.get(figure)
        measured = value is not None and not math.isnan(value)
        holds = measured and (value >= threshold if direction == "min" else value <= threshold)
        check = {"limit": limit, "figure": figure, "threshold": threshold, "value": value if measured else None,
                 "passed": bool(holds)}
        bounds = (intervals or {}).get(figure)
        if bounds:
            check["ci95"] = list(bounds)
            check["conclusive"] = bool(bounds[0] > threshold or bounds[1] < threshold)
        checks.append(check)
    return {"verdict": "passed" if all(c["passed"] for c in checks) else "failed", "checks": checks}
