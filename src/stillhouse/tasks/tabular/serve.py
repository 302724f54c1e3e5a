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
from stillhouse.tasks.tabular.requests import ScoreResponse, check_score


@dataclass
class ServedTabular(ServedStudent):
    model: object = None  # a TabularStudent: the MLP, its preprocessor and its info
    temperature: float = 1.0  # temperature scaling fitted at evaluation (tabular.json)
    task = "tabular"

    @classmethod
    def load(cls, stored) -> ServedTabular:
        student = load_tabular(Path(stored.path) / STUDENT_FOLDER)
        return cls(**stored_identity(stored), labels=student.info.labels, model=student,
                   temperature=student.info.temperature)

    def score_rows(self, rows: list[dict]) -> list[dict]:
        """One ``{label, probability, probabilities, contributions}`` per row of raw column values; a row that lacks
        a column or holds a non-number in a numeric one is a :class:`~stillhouse.errors.DataError` naming it."""
        if not rows:
            return []
        student, info = self.model, self.model.info
        probs = softmax(student.logits(rows), self.temperature)
        positive = info.labels.index(info.positive) if info.positive in info.labels else None
        contributions = student.contributions(rows, info.contributions)
        out = []
        for p, why in zip(probs, contributions):
            best = int(p.argmax())
            out.append({"label": info.labels[best], "probability": float(p[positive if positive is not None
                                                                            else best]),
                        "probabilities": {label: float(v) for label, v in zip(info.labels, np.round(p, 6))},
                        "contributions": why})
        return out

    def warm_up(self, texts: list[str]) -> None:
        pre = self.model.preprocessor  # one typical row: every numeric column at its median, a known category
        self.score_rows([{**dict(zip(pre.numeric, pre.medians)),
                          **{c: (pre.categories[c] or [""])[0] for c in pre.categorical}}])

    def describe(self) -> dict:
        """Also the raw columns it reads (the numeric ones apart) and its Feast features, if any."""
        pre = self.model.preprocessor
        return {**super().describe(), "columns": [*pre.numeric, *pre.categorical], "numeric": pre.numeric,
                "features": self.metadata.get("features")}


SERVING = Serving(student_file=INFO_FILE, route="/score", service="stillhouse.serving.tabular_service:TabularScorer",
                  check=check_score, response=ScoreResponse, load=ServedTabular.load,
                  labels=lambda folder: read_tabular_info(folder).labels)
