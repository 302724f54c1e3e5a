"""The classical baseline (TF-IDF + logistic regression) and the teacher-worth check."""

import numpy as np
import pytest

from stillhouse.evaluate.classical import TfidfBaseline, teacher_check

TEXTS = ["refund my card payment", "card payment refund please", "where is my refund",
         "transfer money abroad", "send a transfer to my friend", "international transfer fee"]
Y = np.array([0, 0, 0, 2, 2, 2])  # label 1 never occurs in the seed


def test_tfidf_baseline_learns_words_and_floors_labels_it_never_saw():
    model = TfidfBaseline.fit(TEXTS, Y, label_count=3)
    logits = model.logits(["refund for my card", "a transfer abroad"])
    assert logits.shape == (2, 3) and logits.argmax(1).tolist() == [0, 2]
    assert np.allclose(np.exp(logits[:, [0, 2]]).sum(1), 1.0) and (logits[:, 1] <= -30).all()
    assert model.parameters == model.pipeline[-1].coef_.size + model.pipeline[-1].intercept_.size
    with pytest.raises(ValueError, match="at least 2 labels"):
        TfidfBaseline.fit(TEXTS[:3], Y[:3], label_count=3)


def test_teacher_check_warns_unless_the_teacher_clearly_beats_both():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=400)
    right = y.copy()
    half = np.where(rng.uniform(size=400) < 0.5, y, (y + 1) % 4)  # right on about half the rows
    clear = teacher_check(y, {"teacher": right, "classical": half, "baseline": half})
    assert clear["worth_distilling"] and clear["warning"] is None
    assert clear["teacher_vs_classical"]["low"] > 0 and clear["teacher_vs_classical"]["difference"] == pytest.approx(
        1 - np.mean(half == y))
    # the classical baseline as good as the teacher: warned, with the remedy
    tie = teacher_check(y, {"teacher": half, "classical": half, "baseline": (y + 1) % 4})
    assert not tie["worth_distilling"]
    assert "TF-IDF + logistic regression" in tie["warning"] and "package:all-mpnet-base-v2" in tie["warning"]
    assert "hard-label student" not in tie["warning"].split("beyond noise")[0]
    # a teacher no better than the hard-label student: warned for that too
    both = teacher_check(y, {"teacher": half, "classical": right, "baseline": half})
    assert "or the hard-label student beyond noise" in both["warning"]
