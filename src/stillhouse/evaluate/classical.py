"""The classical baseline a user would otherwise pick, and whether the teacher is worth distilling.

Every classification run also fits TF-IDF (word 1–2 grams, sublinear term frequency) + logistic regression on
the same labelled seed rows the teacher saw, and scores it on the held-out rows beside the three models. A
teacher that does not beat it — or the hard-label student — by more than the paired-bootstrap interval is not
worth distilling yet: the student can only inherit what the teacher knows. Seen here and elsewhere: the default
MiniLM teacher beat TF-IDF by 2 points at 10 labels per class and lost to it on noisy labels, while MPNet beat it
by 18.
"""

from __future__ import annotations

import pickle

import numpy as np

from stillhouse.evaluate.metrics import accuracy
from stillhouse.evaluate.uncertainty import paired_difference

CLASSICAL_TITLE = "TF-IDF + logistic regression"
LARGER_TEACHER = "package:all-mpnet-base-v2"
_ABSENT = -30.0  # log-probability of a label the seed never shows (the model cannot predict it)


class TfidfBaseline:
    """TF-IDF + logistic regression over ``label_count`` labels, fitted on labelled texts; ``logits`` gives
    log-probabilities ``[n, label_count]`` (labels missing from the training rows get a floor)."""

    def __init__(self, pipeline, classes: np.ndarray, label_count: int):
        self.pipeline, self.classes, self.label_count = pipeline, classes, label_count

    @classmethod
    def fit(cls, texts: list[str], y: np.ndarray, label_count: int, seed: int = 0) -> TfidfBaseline:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            raise ValueError("the classical baseline needs labelled rows of at least 2 labels")
        pipeline = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                                 LogisticRegression(C=10, max_iter=3000, random_state=seed))
        pipeline.fit(list(texts), y)
        return cls(pipeline, pipeline.classes_, label_count)

    def logits(self, texts: list[str]) -> np.ndarray:
        out = np.full((len(texts), self.label_count), _ABSENT)
        out[:, self.classes] = np.log(np.clip(self.pipeline.predict_proba(list(texts)), 1e-12, 1.0))
        return out

    @property
    def size_mb(self) -> float:
        """Its size saved (the pickled vocabulary and coefficients)."""
        return len(pickle.dumps(self.pipeline)) / 1e6

    @property
    def parameters(self) -> int:
        model = self.pipeline[-1]
        return int(model.coef_.size + model.intercept_.size)


TEXT_REMEDY = (f"Use a larger teacher such as `{LARGER_TEACHER}` (pip install 'stillhouse[mpnet]') or label more "
               "seed rows, then distil.")


def teacher_check(y: np.ndarray, predictions: dict[str, np.ndarray], seed: int = 0, *, metric=accuracy,
                  figure: str = "accuracy", classical: str = CLASSICAL_TITLE, baseline: str = "the hard-label student",
                  remedy: str = TEXT_REMEDY) -> dict:
    """Teacher − classical baseline and teacher − hard-label student in ``metric`` (``metric(y, prediction)``:
    accuracy of predicted labels by default, AUC of scores for a table, nDCG for a ranking), each with its
    paired-bootstrap 95 % interval; ``worth_distilling`` when both intervals lie above 0, else a ``warning`` that
    names the remedy. ``figure``, ``classical`` and ``baseline`` name what was compared, for the report."""
    teacher = predictions["teacher"]
    check = {"teacher_vs_classical": paired_difference(y, teacher, predictions["classical"], metric, seed=seed),
             "teacher_vs_baseline": paired_difference(y, teacher, predictions["baseline"], metric, seed=seed),
             "figure": figure, "classical": classical, "baseline": baseline}
    short = [name for key, name in (("teacher_vs_classical", classical), ("teacher_vs_baseline", baseline))
             if not check[key]["low"] > 0]
    check["worth_distilling"] = not short
    check["warning"] = None if not short else (
        f"the teacher does not beat {' or '.join(short)} beyond noise in {figure} (teacher − {classical} "
        f"{_points(check['teacher_vs_classical'])}; teacher − {baseline} "
        f"{_points(check['teacher_vs_baseline'])}): the student can only inherit what the teacher knows. {remedy}")
    return check


def worth_distilling_sentence(check: dict) -> str:
    """The check's finding in words when the teacher passed it (checks written before ``figure`` and the names were
    recorded read as the text task's)."""
    p = check["teacher_vs_classical"]
    return (f"The teacher beats {check.get('classical', CLASSICAL_TITLE)} on the same seed by "
            f"{p['difference'] * 100:+.1f} {check.get('figure', 'accuracy')} points (paired 95 % CI "
            f"{p['low'] * 100:+.1f} to {p['high'] * 100:+.1f}) and {check.get('baseline', 'the hard-label student')} "
            "beyond noise: worth distilling.")


def _points(paired: dict) -> str:
    return (f"{paired['difference'] * 100:+.1f} points, paired 95 % CI {paired['low'] * 100:+.1f} to "
            f"{paired['high'] * 100:+.1f}")
