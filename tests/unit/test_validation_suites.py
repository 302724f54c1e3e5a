"""Each Great Expectations check: a frame that passes, and a frame that fails exactly that check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from stillhouse.spec import SeedChecks, SoftLabelChecks, SyntheticChecks
from stillhouse.validate.runner import ValidationFailed, require, run_suite
from stillhouse.validate.suites import seed_checks, soft_label_checks, soft_label_frame, synthetic_checks

LABELS = ["negative", "positive"]
SEED_TEXTS = {
    "positive": ["the service was great today", "i love this new card", "excellent support from the team",
                 "very happy with the transfer speed"],
    "negative": ["the app is broken again", "terrible wait on the phone", "i hate these hidden fees",
                 "my refund never arrived"],
}


def seed_frame() -> pd.DataFrame:
    rows = [(text, label) for label, texts in SEED_TEXTS.items() for text in texts]
    return pd.DataFrame({"row_id": [f"seed-{i:07d}" for i in range(len(rows))],
                         "text": [t for t, _ in rows], "label": [label for _, label in rows]})


def failed_types(result) -> list[str]:
    return sorted(f["type"] for f in result.failures)


SMALL = SeedChecks(min_per_label=3, min_rows=6, max_rows=100, min_text_length=5, max_text_length=200)


def _with(frame: pd.DataFrame, index: int, **values) -> pd.DataFrame:
    frame = frame.copy()
    for column, value in values.items():
        frame[column] = frame[column].astype(object)
        frame.loc[index, column] = value
    return frame


SEED_BREAKS = {
    "expect_column_to_exist": lambda f: f.drop(columns=["row_id"]),
    "expect_column_values_to_be_of_type": lambda f: _with(f, 0, text=12345),
    "expect_column_values_to_not_be_null": lambda f: _with(f, 1, label=None),
    "expect_column_values_to_be_in_set": lambda f: _with(f, 2, label="postive"),
    "expect_column_value_lengths_to_be_between": lambda f: _with(f, 3, text="ok"),
    "expect_column_values_to_be_unique": lambda f: _with(f, 4, text=f.loc[5, "text"]),
    "expect_table_row_count_to_be_between": lambda f: f.iloc[:5],
}


def test_seed_suite_passes_on_good_seed():
    frame, checks = seed_checks(seed_frame(), LABELS, SMALL)
    result = run_suite("seed", frame, checks)
    assert result.success, result.summary()
    assert result.evaluated == len(checks) == 13


@pytest.mark.parametrize("expectation", sorted(SEED_BREAKS))
def test_seed_suite_catches(expectation):
    frame, checks = seed_checks(SEED_BREAKS[expectation](seed_frame()), LABELS, SMALL)
    result = run_suite("seed", frame, checks)
    assert not result.success
    assert expectation in failed_types(result)


def test_a_label_with_too_few_examples_fails_with_its_rows():
    frame = pd.concat([seed_frame(), pd.DataFrame({"row_id": ["seed-x"], "text": ["great stuff really"],
                                                   "label": ["postive"]})], ignore_index=True)
    frame, checks = seed_checks(frame, LABELS + ["postive"], SMALL)
    result = run_suite("seed", frame, checks)
    assert failed_types(result) == ["expect_column_values_to_be_between"]
    assert result.failures[0]["unexpected"] == 1
    assert "at least 3 seed examples" in result.summary() and "'postive'" in result.summary()


def test_failure_writes_results_and_data_docs_and_raises_summary(tmp_path):
    frame, checks = seed_checks(_with(seed_frame(), 2, label="postive"), LABELS, SMALL)
    result = run_suite("seed", frame, checks, tmp_path)
    saved = json.loads((tmp_path / "seed.json").read_text())
    assert saved["success"] is False
    assert (tmp_path / "data_docs" / "index.html").is_file()
    assert list((tmp_path / "data_docs" / "validations").rglob("*.html"))
    with pytest.raises(ValidationFailed) as err:
        require(result, "fix the seed file")
    message = str(err.value)
    assert "labels are in the label set" in message and "'postive'" in message and "fix the seed file" in message
    assert len(message.splitlines()) < 25


def soft_labels(logits: np.ndarray, splits: list[str], row_ids: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"row_id": row_ids, "split": splits, "teacher_logits": list(logits)})


def confident_soft_labels(seed: pd.DataFrame) -> pd.DataFrame:
    gold = seed["label"].map({label: i for i, label in enumerate(LABELS)}).to_numpy()
    logits = np.where(np.arange(2)[None, :] == gold[:, None], 2.0, -1.0)
    pool = np.array([[0.3, -0.2], [-1.0, 1.5]])
    return soft_labels(np.vstack([logits, pool]), ["seed"] * len(seed) + ["pool", "pool"],
                       list(seed["row_id"]) + ["pool-0000000", "pool-0000001"])


def run_soft(table: pd.DataFrame, checks: SoftLabelChecks | None = None):
    frame = soft_label_frame(table, seed_frame(), LABELS)
    return run_suite("soft_labels", frame, soft_label_checks(frame, checks or SoftLabelChecks()))


def test_soft_label_suite_passes_on_a_confident_correct_teacher():
    result = run_soft(confident_soft_labels(seed_frame()))
    assert result.success, result.summary()


def test_soft_label_frame_derives_sum_error_entropy_and_correctness():
    frame = soft_label_frame(confident_soft_labels(seed_frame()), seed_frame(), LABELS)
    assert np.allclose(frame["prob_sum_error"], 0.0, atol=1e-12)
    p = 1 / (1 + np.exp(-3.0))  # softmax of (2, -1)
    assert frame["entropy"].iloc[0] == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)) / np.log(2))
    assert frame.loc[frame["split"] == "seed", "teacher_correct"].tolist() == [1.0] * 8
    assert frame.loc[frame["split"] == "pool", "teacher_correct"].isna().all()


def test_soft_label_suite_catches_non_finite_logits():
    table = confident_soft_labels(seed_frame())
    table.at[3, "teacher_logits"] = np.array([np.nan, 1.0])
    assert "expect_column_values_to_not_be_null" in failed_types(run_soft(table))


def test_soft_label_suite_catches_a_uniform_teacher():
    table = confident_soft_labels(seed_frame())
    table["teacher_logits"] = [np.zeros(2)] * len(table)
    types = failed_types(run_soft(table))
    assert "expect_column_mean_to_be_between" in types  # entropy 1.0 > 0.98, and accuracy on seed below 0.5


def test_soft_label_suite_catches_a_teacher_wrong_on_its_seed():
    table = confident_soft_labels(seed_frame())
    table["teacher_logits"] = [-row for row in table["teacher_logits"]]
    result = run_soft(table)
    assert [f["meaning"] for f in result.failures] == ["the teacher gets >= 50% of its seed rows right"]


def test_soft_label_sum_tolerance_is_checked_on_the_derived_error_column():
    frame = soft_label_frame(confident_soft_labels(seed_frame()), seed_frame(), LABELS)
    frame.loc[0, "prob_sum_error"] = 0.01  # what an ensemble that forgot to renormalise would produce
    result = run_suite("soft_labels", frame, soft_label_checks(frame, SoftLabelChecks()))
    assert failed_types(result) == ["expect_column_values_to_be_between"]
    result = run_suite("soft_labels", frame, soft_label_checks(frame, SoftLabelChecks(sum_tolerance=0.05)))
    assert result.success


def synthetic_frame() -> pd.DataFrame:
    texts = ["could you tell me why my transfer is so quick and smooth", "brilliant mobile banking experience",
             "customer support solved everything in minutes", "nice new features in the latest release",
             "why was i charged twice for one payment", "the card machine declined me for no reason",
             "nobody answers the complaints line", "interest rate went up without any notice"]
    return pd.DataFrame({"row_id": [f"synthetic-{i:07d}" for i in range(8)], "text": texts,
                         "label": ["positive"] * 4 + ["negative"] * 4})


def run_synthetic(frame: pd.DataFrame, checks: SyntheticChecks | None = None):
    derived, suite = synthetic_checks(frame, seed_frame(), LABELS, SMALL, checks or SyntheticChecks())
    return run_suite("synthetic", derived, suite)


def test_synthetic_suite_passes_on_novel_balanced_rows():
    result = run_synthetic(synthetic_frame())
    assert result.success, result.summary()


def test_synthetic_suite_privacy_catches_a_lightly_edited_seed_row():
    frame = _with(synthetic_frame(), 0, text="the service was great today!")
    result = run_synthetic(frame)
    assert [f["meaning"] for f in result.failures] == [
        "privacy: no synthetic row closer than 0.2 to a seed row"]


def test_synthetic_suite_catches_near_duplicates():
    frame = _with(synthetic_frame(), 1, text="could you tell me why my transfer is so quick and smooth!")
    result = run_synthetic(frame)
    assert any("near-duplicate" in f["meaning"] for f in result.failures)


def test_synthetic_suite_catches_label_drift():
    frame = synthetic_frame().assign(label="positive")
    result = run_synthetic(frame)
    assert failed_types(result) == ["expect_column_kl_divergence_to_be_less_than"]
    assert run_synthetic(frame, SyntheticChecks(max_label_kl=5.0)).success


def test_synthetic_suite_checks_the_seed_schema():
    result = run_synthetic(_with(synthetic_frame(), 2, label="neutral"))
    assert "expect_column_values_to_be_in_set" in failed_types(result)


def test_teacher_embedding_suite_passes_on_unit_vectors_and_names_the_bad_ones():
    from stillhouse.validate.suites import teacher_embedding_checks

    good = pd.DataFrame({"kind": "passage", "id": ["d1", "d2", "d3"],
                         "embedding": [np.array([0.6, 0.8]), np.array([1.0, 0.0]), np.array([0.0, -1.0])]})
    assert run_suite("ranking_teacher_embeddings", *teacher_embedding_checks(good)).success
    bad = good.copy()
    bad.at[0, "embedding"] = np.array([np.nan, 1.0])
    bad.at[1, "embedding"] = np.array([3.0, 4.0])
    bad.at[2, "embedding"] = np.array([0.0, 0.0, 1.0])
    result = run_suite("ranking_teacher_embeddings", *teacher_embedding_checks(bad))
    assert not result.success
    summary = result.summary()
    for text in ("finite", "unit vectors", "one size", "d1", "d2", "d3"):
        assert text in summary, (text, summary)
