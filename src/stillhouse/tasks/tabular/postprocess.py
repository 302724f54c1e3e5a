"""Post-processing: a per-group decision rule on a model's probabilities (Fairlearn's ``ThresholdOptimizer``).

The one mitigation that **decides with the sensitive features**: each group gets its own thresholds, so every
request must carry them, and in many jurisdictions that is disparate treatment. A run offers it only when the
spec says ``task.mitigation: postprocessing`` *and* ``task.decide_with_sensitive_features: true``; the model card
says so plainly. Nothing is retrained: the unmitigated teacher and student each get a rule fitted on their own
probabilities for the seed rows (the student's before calibration, as it serves them to the rule), under
``demographic_parity`` (relaxed to a tolerance, the strength) or ``equalized_odds``. Fairlearn's objective is
accuracy, not the cost matrix: its decisions weigh a missed default like a refused good borrower.

The fitted rule flags a row with a probability that depends on its group and its score (two thresholds mixed,
and for equalized odds a share of constant decisions). A served decision draws that chance from a hash of the
row's values, so the same application always gets the same answer; the evaluation draws the same way.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.io import read_json, write_json
from stillhouse.tasks.tabular.data import TabularSchema

RULE_FILE = "decision_rule.json"
_BOUND = 2.0  # thresholds of ±inf (flag every / no row) stored as ±2: probabilities lie in [0, 1]


@dataclass(frozen=True)
class DecisionRule:
    constraint: str
    tolerance: float | None
    sensitive: list[str]
    bins: dict[str, list[float]]
    groups_of: dict[str, dict[str, str]]
    inputs: list[str]  # the columns whose values key a row's draw
    rules: dict[str, dict] = field(default_factory=dict)  # group → {"parts": [[p, op, t], ...], "p_ignore", "constant"}
    fallback_threshold: float = 0.5  # never reached through /score (unknown values are refused there)
    numeric: list[str] = field(default_factory=list)  # columns whose values key a draw as numbers
    values: dict[str, list[str]] = field(default_factory=dict)  # categorical sensitive column → the seed's values

    def group_of(self, rows: pd.DataFrame | list[dict]) -> np.ndarray:
        """Each row's joint group over the sensitive features (binned, mapped), as at fitting."""
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        schema = TabularSchema(labels=[], positive=None, numeric=[], categorical=[], sensitive=self.sensitive,
                               bins=self.bins, groups_of=self.groups_of)
        return np.array(["|".join(parts) for parts in zip(*(schema.groups(frame, c) for c in self.sensitive))],
                        dtype=object)

    def flag_probability(self, positive: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """The chance the rule flags each row, given its positive probability and group."""
        out = (positive > self.fallback_threshold).astype(np.float64)
        for group, rule in self.rules.items():
            rows = groups == group
            p = sum(share * (positive[rows] > t if op == ">" else positive[rows] < t) for share, op, t in rule["parts"])
            out[rows] = rule["p_ignore"] * rule["constant"] + (1 - rule["p_ignore"]) * p
        return out

    def decide(self, positive: np.ndarray, rows: pd.DataFrame | list[dict]) -> np.ndarray:
        """Flagged or not, per row: the rule's chance against a draw keyed by the row's values."""
        chance = self.flag_probability(positive, self.group_of(rows))
        return draws(rows, self.inputs + self.sensitive, set(self.numeric)) < chance

    def save(self, folder: str | Path) -> None:
        write_json(Path(folder) / RULE_FILE, asdict(self))


def draws(rows: pd.DataFrame | list[dict], columns: list[str], numeric: set[str] = frozenset()) -> np.ndarray:
    """A uniform number in [0, 1) per row from the SHA-256 of its values, written canonically (a number as a float
    however it was sent, text stripped), so the same application always draws the same."""
    records = rows.to_dict(orient="records") if isinstance(rows, pd.DataFrame) else rows
    keys = ("\x1f".join(_text(r.get(c), c in numeric) for c in columns).encode() for r in records)
    return np.array([int.from_bytes(hashlib.sha256(k).digest()[:8], "big") / 2 ** 64 for k in keys])


def _text(value, number: bool) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if number:
        try:
            return repr(float(value))
        except (TypeError, ValueError):
            return str(value).strip()
    return str(value).strip()


def load_rule(folder: str | Path) -> DecisionRule | None:
    path = Path(folder) / RULE_FILE
    return DecisionRule(**read_json(path)) if path.is_file() else None


def _prefit(positive: np.ndarray):
    """Precomputed probabilities as the prefit estimator ThresholdOptimizer asks for (its X: row indices)."""
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Scores(ClassifierMixin, BaseEstimator):
        def __init__(self, positive=None):
            self.positive = positive

        def fit(self, x, y):
            return self

        def predict_proba(self, x) -> np.ndarray:
            p = self.positive[np.asarray(x, dtype=np.int64).ravel()]
            return np.stack([1 - p, p], 1)

    scores = Scores(positive)
    scores.classes_, scores.fitted_ = np.array([0, 1]), True
    return scores


def fit_rule(constraint: str, tolerance: float | None, positive: np.ndarray, y: np.ndarray, groups: np.ndarray,
             schema: TabularSchema, fallback_threshold: float, seed: pd.DataFrame | None = None) -> DecisionRule:
    """ThresholdOptimizer on ``positive`` (probabilities of the positive label), ``y`` (is positive) and the rows'
    joint sensitive ``groups``; ``tolerance`` relaxes demographic parity (None or 0: exact). ``seed``: the rows,
    whose values of each categorical sensitive feature are the only ones a request may send."""
    from fairlearn.postprocessing import ThresholdOptimizer

    optimizer = ThresholdOptimizer(estimator=_prefit(positive), constraints=constraint, objective="accuracy_score",
                                   prefit=True, predict_method="predict_proba", tol=tolerance or None)
    optimizer.fit(np.arange(len(positive))[:, None], y.astype(int), sensitive_features=groups)
    rules = {}
    for group, bunch in optimizer.interpolated_thresholder_.interpolation_dict.items():
        parts = [[float(getattr(bunch, f"p{k}")), getattr(bunch, f"operation{k}")._operator,
                  float(np.clip(getattr(bunch, f"operation{k}")._threshold, -_BOUND, _BOUND))] for k in (0, 1)]
        rules[str(group)] = {"parts": parts, "p_ignore": float(bunch.get("p_ignore", 0.0)),
                             "constant": float(bunch.get("prediction_constant", 0.0))}
    values = {c: sorted({str(v).strip() for v in seed[c].dropna()}) for c in schema.sensitive
              if c not in schema.bins} if seed is not None else {}
    return DecisionRule(constraint, tolerance, list(schema.sensitive), dict(schema.bins), dict(schema.groups_of),
                        list(schema.inputs), rules, fallback_threshold, [*schema.numeric, *schema.bins], values)
