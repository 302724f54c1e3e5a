"""Fairness mitigations of a tabular run, each strength a *setting* on the frontier.

A run with ``task.mitigation`` other than ``none`` trains a teacher and a student for ``none`` and for every
strength of ``task.mitigation_grid``; the evaluation measures each and packages the most accurate setting whose
student passes the gate (:mod:`stillhouse.tasks.tabular.frontier`). The sensitive features are used here, at
training, and never as the student's inputs:

- ``reweighing`` (Kamiran & Calders 2012): seed rows weighted by ``P(group) · P(label) / P(group, label)`` over the
  joint sensitive groups, raised to the strength (0.5: half-way in log-weight; 1: the label independent of the
  groups in the weighted data), capped so that a handful of rows in a rare cell cannot dominate;
- ``reductions`` (Agarwal et al. 2018, Fairlearn's ``ExponentiatedGradient``): the teacher is fitted under a
  constraint with the cost matrix as its objective (``ErrorRate(costs)``). ``demographic_parity``: each group's
  rate of the *favourable* decision (the one the four-fifths rule counts) at least the strength times the overall
  rate (``DemographicParity(ratio_bound)``; the target is "favourable", so a ratio bound on Fairlearn's selection
  rate is a bound on approvals); ``equalized_odds``: true- and false-positive rates within the strength
  (``EqualizedOdds(difference_bound)``). Bounds are targets on the seed rows, not guarantees: the evaluation
  measures what held. The result is a randomized mixture of teachers; its soft labels are the mixture's expected
  probabilities. Its members were fitted on cost-weighted rows, so a member's probability 0.5 is the cost
  threshold's decision: the log-odds are shifted by ``log(fp / fn)`` of the target back to the probability scale,
  and the cost threshold then takes the constrained teacher's decision. That shift undoes the costs, not the
  constraint: the constrained probabilities move by group (that is how parity is reached), so they are scores
  for the decision, not calibrated probabilities of default per group — the card says so. Whether the
  student's decisions inherit the teacher's fairness is measured, not assumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.errors import DataError
from stillhouse.evaluate.risk import cost_threshold
from stillhouse.tasks.tabular.data import TabularSchema
from stillhouse.tasks.tabular.postprocess import fit_rule
from stillhouse.tasks.tabular.preprocess import Preprocessor
from stillhouse.tasks.tabular.teacher import TabularTeacher, fit_teacher, member_estimator, members_of

DEFAULT_GRIDS = {"reweighing": (0.5, 1.0),
                 "reductions": {"demographic_parity": (0.8, 0.9, 0.95), "equalized_odds": (0.1, 0.05, 0.02)},
                 "postprocessing": {"demographic_parity": (0.1, 0.05, 0.0), "equalized_odds": (0.0,)}}
SETTINGS_FOLDER = "settings"  # a step's folder holds `none` at its top and every other setting below this
# ExponentiatedGradient's iterations: each fits the teacher once; its default (50) changed no figure of
# benchmarks/credit.py beyond noise against 20 and took 2.5 times as long
REDUCTIONS_ITERATIONS = 20


@dataclass(frozen=True)
class Setting:
    """One point of the frontier: ``none``, or a mitigation at a strength."""

    mitigation: str
    strength: float | None = None
    constraint: str | None = None  # reductions only

    @property
    def name(self) -> str:
        if self.mitigation == "none":
            return "none"
        parts = [self.mitigation, *([self.constraint] if self.constraint else []), f"{self.strength:g}"]
        return "-".join(parts).replace("_", "-")

    @property
    def retrains(self) -> bool:
        """Whether this setting trains its own teacher and student (post-processing adds a rule to `none`'s)."""
        return self.mitigation != "postprocessing"

    def describe(self) -> str:
        if self.mitigation == "none":
            return "no mitigation"
        if self.mitigation == "reweighing":
            return f"reweighing at strength {self.strength:g}"
        if self.mitigation == "postprocessing":
            return (f"post-processing under {self.constraint.replace('_', ' ')}"
                    + (f", tolerance {self.strength:g}" if self.strength else "") + " (decides with the sensitive features)")
        bound = "ratio bound" if self.constraint == "demographic_parity" else "difference bound"
        return f"reductions under {self.constraint.replace('_', ' ')}, {bound} {self.strength:g}"

    def folder(self, root: str | Path) -> Path:
        """Where this setting's model or labels live in a step's folder."""
        return Path(root) if self.mitigation == "none" else Path(root) / SETTINGS_FOLDER / self.name


def settings_of(task) -> list[Setting]:
    """``none`` first, then the spec's mitigation at each strength of its grid (or the default grid)."""
    if task.mitigation == "none":
        return [Setting("none")]
    constraint = task.fairness_constraint if task.mitigation != "reweighing" else None
    default = DEFAULT_GRIDS[task.mitigation]
    grid = task.mitigation_grid or (default[constraint] if isinstance(default, dict) else default)
    return [Setting("none"), *(Setting(task.mitigation, float(s), constraint) for s in grid)]


def joint_groups(schema: TabularSchema, frame: pd.DataFrame) -> np.ndarray:
    """Each row's group over every sensitive feature together (e.g. ``male|<25``)."""
    return np.array(["|".join(parts) for parts in zip(*(schema.groups(frame, c) for c in schema.sensitive))],
                    dtype=object)


def reweighing(schema: TabularSchema, frame: pd.DataFrame, strength: float = 1.0, cap: float = 5.0) -> np.ndarray:
    """Per labelled row, ``(P(group) · P(label) / P(group, label)) ** strength`` over the joint sensitive groups,
    clipped to [1/cap, cap]; all ones without sensitive features or at strength 0."""
    if not schema.sensitive or strength == 0:
        return np.ones(len(frame))
    group = pd.Series(joint_groups(schema, frame), index=frame.index)
    label = frame["label"]
    joint = pd.crosstab(group, label, normalize=True)
    expected = np.outer(group.value_counts(normalize=True).reindex(joint.index),
                        label.value_counts(normalize=True).reindex(joint.columns))
    ratio = pd.DataFrame(expected, index=joint.index, columns=joint.columns) / joint.where(joint > 0)
    weights = np.array([ratio.at[g, y] for g, y in zip(group, label)], dtype=np.float64)
    return np.clip(weights ** strength, 1 / cap, cap)


def row_weights(setting: Setting, schema: TabularSchema, frame: pd.DataFrame) -> np.ndarray:
    """The seed rows' weights in the losses of this setting's teacher and student."""
    return reweighing(schema, frame, setting.strength) if setting.mitigation == "reweighing" else np.ones(len(frame))


class MemberAverage:
    """The teacher's members as one scikit-learn classifier (what ExponentiatedGradient clones and refits on
    its reweighted rows): each member fitted on the same rows and weights, probabilities averaged."""

    def __init__(self, teacher_spec=None, random_state: int = 0):
        self.teacher_spec, self.random_state = teacher_spec, random_state

    def get_params(self, deep: bool = True) -> dict:
        return {"teacher_spec": self.teacher_spec, "random_state": self.random_state}

    def set_params(self, **params) -> MemberAverage:
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, x, y, sample_weight=None) -> MemberAverage:
        members, self.weights_ = members_of(self.teacher_spec)
        self.models_ = [member_estimator(m, self.random_state).fit(x, y, sample_weight=sample_weight)
                        for m in members]
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, x) -> np.ndarray:
        out = np.zeros((len(x), len(self.classes_)))
        for model, weight in zip(self.models_, self.weights_):
            out[:, np.searchsorted(self.classes_, model.classes_)] += weight * model.predict_proba(x)
        return out

    def predict(self, x) -> np.ndarray:
        return self.classes_[self.predict_proba(x).argmax(1)]


def fit_setting_teacher(setting: Setting, teacher_spec, seed: pd.DataFrame, y: np.ndarray, pre: Preprocessor,
                        schema: TabularSchema, task, random_seed: int) -> TabularTeacher:
    """This setting's teacher on the seed (``y``: label indices; ``task``: the spec's task section)."""
    if setting.mitigation != "none" and not schema.binary:
        raise DataError(f"mitigation `{setting.mitigation}` needs two labels (fairness is measured for binary "
                        f"tasks); the seed has {len(schema.labels)}", "set task.mitigation: none")
    if setting.mitigation != "reductions":
        return fit_teacher(teacher_spec, seed, y, pre, schema.labels, random_seed, row_weights(setting, schema, seed))
    return _reductions_teacher(setting, teacher_spec, seed, y, pre, schema, task.costs, task.favourable, random_seed)


def _reductions_teacher(setting: Setting, teacher_spec, seed: pd.DataFrame, y: np.ndarray, pre: Preprocessor,
                        schema: TabularSchema, costs, favourable: str | None, random_seed: int) -> TabularTeacher:
    from fairlearn.reductions import DemographicParity, EqualizedOdds, ErrorRate, ExponentiatedGradient

    if not schema.binary:
        raise DataError(f"mitigation `reductions` needs two labels; the seed has {len(schema.labels)}",
                        "use mitigation: reweighing for a multi-class table")
    groups = joint_groups(schema, seed)
    if len(set(groups)) < 2:
        raise DataError("the seed rows hold one sensitive group only: there is nothing to constrain",
                        "check task.sensitive_features / sensitive_bins, or set mitigation: none")
    # The four-fifths rule compares the rates of the favourable decision: the target class 1 is that decision
    # (not flagged, where a flag denies), so that a ratio bound on Fairlearn's selection rate is a bound on it.
    positive = schema.labels.index(schema.positive)
    grants = favourable == "flagged"
    target_index = positive if grants else 1 - positive
    fp, fn = ((costs.false_positive, costs.false_negative) if grants
              else (costs.false_negative, costs.false_positive))  # approving a defaulter is the costly error
    constraint = (DemographicParity(ratio_bound=setting.strength) if setting.constraint == "demographic_parity"
                  else EqualizedOdds(difference_bound=setting.strength))
    search = ExponentiatedGradient(MemberAverage(teacher_spec, random_seed), constraint,
                                   objective=ErrorRate(costs={"fp": fp, "fn": fn}), max_iter=REDUCTIONS_ITERATIONS)
    search.fit(pre.transform(seed), (y == target_index).astype(int), sensitive_features=groups)
    models, weights = [], []
    for predictor, share in zip(search.predictors_, search.weights_):
        if share <= 0:
            continue
        parts = getattr(predictor, "models_", [predictor])  # a fitted MemberAverage, or Fairlearn's constant one
        models += parts
        weights += [share * w for w in getattr(predictor, "weights_", [1.0])]
    total = sum(weights)
    return TabularTeacher(pre, models, [w / total for w in weights], list(schema.labels), target_index=target_index,
                          log_odds_shift=math.log(fp / fn))


def write_rule(setting: Setting, positive_seed: np.ndarray, seed: pd.DataFrame, schema: TabularSchema, costs,
               folder: str | Path) -> None:
    """A post-processing setting's decision rule, fitted on the model's probabilities of the positive label for the
    seed rows, written beside the model (other settings: nothing)."""
    if setting.mitigation != "postprocessing":
        return
    if not schema.binary:
        raise DataError(f"mitigation `postprocessing` needs two labels; the seed has {len(schema.labels)}",
                        "use mitigation: reweighing for a multi-class table")
    fit_rule(setting.constraint, setting.strength, positive_seed,
             (seed["label"] == schema.positive).to_numpy(), joint_groups(schema, seed), schema,
             cost_threshold(costs.false_negative, costs.false_positive), seed).save(folder)
