"""A packaged tabular student served (``/score``): rows of raw column values (or entity ids) in, a label, its
probability and each row's top feature contributions out. What the route asks and answers around the model is
:mod:`stillhouse.tasks.tabular.requests`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stillhouse.evaluate.metrics import softmax
from stillhouse.serve.student import STUDENT_FOLDER, ServedStudent, Serving, stored_identity
from stillhouse.tasks.tabular.model import INFO_FILE, load_tabular, read_tabular_info
from stillhouse.tasks.tabular.postprocess import DecisionRule, load_rule
from stillhouse.tasks.tabular.requests import ScoreResponse, check_score


@dataclass
class ServedTabular(ServedStudent):
    model: object = None  # a TabularStudent: the MLP, its preprocessor and its info
    temperature: float = 1.0  # temperature scaling fitted at evaluation (tabular.json)
    rule: DecisionRule | None = None  # post-processing: the per-group decision rule packaged with the student
    task = "tabular"

    @classmethod
    def load(cls, stored) -> ServedTabular:
        folder = Path(stored.path) / STUDENT_FOLDER
        student = load_tabular(folder)
        return cls(**stored_identity(stored), labels=student.info.labels, model=student,
                   temperature=student.info.temperature, rule=load_rule(folder))

    def _decisions(self, rows: list[dict], logits: np.ndarray, probs: np.ndarray) -> list[bool | None]:
        """Binary students: flagged or not — by the packaged post-processing rule (on the uncalibrated
        probability, as it was fitted), else the served probability above the cost threshold."""
        info = self.model.info
        if info.positive not in info.labels or (self.rule is None and info.threshold is None):
            return [None] * len(rows)
        positive = info.labels.index(info.positive)
        if self.rule is not None:
            return self.rule.decide(softmax(logits)[:, positive], rows).tolist()
        return (probs[:, positive] > info.threshold).tolist()

    def score_rows(self, rows: list[dict]) -> list[dict]:
        """One ``{label, probability, probabilities, contributions}`` per row of raw column values; a row that lacks
        a column or holds a non-number in a numeric one is a :class:`~stillhouse.errors.DataError` naming it."""
        if not rows:
            return []
        student, info = self.model, self.model.info
        logits = student.logits(rows)
        probs = softmax(logits, self.temperature)
        positive = info.labels.index(info.positive) if info.positive in info.labels else None
        contributions = student.contributions(rows, info.contributions)
        out = []
        for p, why, flagged in zip(probs, contributions, self._decisions(rows, logits, probs)):
            best = int(p.argmax())
            out.append({"label": info.labels[best], "probability": float(p[positive if positive is not None
                                                                            else best]),
                        "probabilities": {label: float(v) for label, v in zip(info.labels, np.round(p, 6))},
                        "contributions": why, **({} if flagged is None else {"flagged": bool(flagged)})})
        return out

    def warm_up(self, texts: list[str]) -> None:
        pre = self.model.preprocessor  # one typical row: every numeric column at its median, a known category
        rule = self.rule
        sensitive = {c: rule.bins[c][0] if c in rule.bins else (rule.values.get(c) or [""])[0]
                     for c in rule.sensitive} if rule else {}
        self.score_rows([{**dict(zip(pre.numeric, pre.medians)),
                          **{c: (pre.categories[c] or [""])[0] for c in pre.categorical}, **sensitive}])

    def describe(self) -> dict:
        """Also the raw columns it reads (the numeric ones apart) and its Feast features, if any."""
        pre, rule = self.model.preprocessor, self.rule
        sensitive = [c for c in (rule.sensitive if rule else []) if c not in pre.numeric + pre.categorical]
        return {**super().describe(), "columns": [*pre.numeric, *pre.categorical, *sensitive],
                "numeric": [*pre.numeric, *(c for c in sensitive if c in rule.bins)],
                "features": self.metadata.get("features"),
                # a packaged post-processing rule: the sensitive columns every row must carry (a categorical one,
                # one of the seed's values), which decide the answer
                "decides_with_sensitive_features": ({c: rule.values.get(c) for c in rule.sensitive} if rule
                                                    else None)}


SERVING = Serving(student_file=INFO_FILE, route="/score", service="stillhouse.serving.tabular_service:TabularScorer",
                  check=check_score, response=ScoreResponse, load=ServedTabular.load,
                  labels=lambda folder: read_tabular_info(folder).labels)
