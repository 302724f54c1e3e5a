"""The three Great Expectations suites, defined in code: seed, soft labels, synthetic.

Each ``*_checks`` function returns the frame GE validates (the data plus the derived columns some checks
need) and the list of :class:`~stillhouse.validate.runner.Check`. Derived columns stand in for what GE cannot
express directly: ``ExpectMulticolumnSumToEqual`` has no tolerance, so a row's probabilities are checked via
``prob_sum_error = |sum - 1|``; "at least N per label" via each row's ``label_count``; privacy via each
synthetic row's ``nearest_seed_distance``. Thresholds come from the spec's ``validation`` section.
"""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd

from stillhouse.evaluate.metrics import softmax
from stillhouse.spec import SeedChecks, SoftLabelChecks, SyntheticChecks
from stillhouse.synth.similarity import nearest_other_similarity, nearest_similarity
from stillhouse.validate.runner import Check


class _Expectations:
    """``great_expectations.expectations``, imported on the first check built: GE takes ~1.7 s to import, and every
    pipeline step imports its task (and so this module) whether or not it validates anything."""

    def __getattr__(self, name: str):
        return getattr(importlib.import_module("great_expectations.expectations"), name)


E = _Expectations()


def _row_checks(labels: list[str], seed: SeedChecks) -> list[Check]:
    """Schema, types, nulls, label set, text length and uniqueness: shared by the seed and synthetic suites."""
    checks = [Check(E.ExpectColumnToExist(column=c), f"column `{c}` is present") for c in ("row_id", "text", "label")]
    checks += [Check(E.ExpectColumnValuesToBeOfType(column=c, type_="str"), f"`{c}` is text") for c in ("text", "label")]
    checks += [Check(E.ExpectColumnValuesToNotBeNull(column=c), f"no missing `{c}`") for c in ("text", "label")]
    return checks + [
        Check(E.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)), "labels are in the label set"),
        Check(E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=seed.min_text_length,
                                                     max_value=seed.max_text_length),
              f"text is {seed.min_text_length}-{seed.max_text_length} characters long"),
        Check(E.ExpectColumnValuesToBeUnique(column="row_id"), "row ids are unique"),
        Check(E.ExpectColumnValuesToBeUnique(column="text"), "no duplicate texts"),
    ]


def seed_checks(seed_frame: pd.DataFrame, labels: list[str], checks: SeedChecks) -> tuple[pd.DataFrame, list[Check]]:
    """The seed suite over ``seed_frame`` (row_id, text, label)."""
    frame = seed_frame.assign(label_count=seed_frame["label"].map(seed_frame["label"].value_counts()).astype(float))
    return frame, _row_checks(labels, checks) + [
        Check(E.ExpectColumnValuesToBeBetween(column="label_count", min_value=checks.min_per_label),
              f"every label has at least {checks.min_per_label} seed examples", show="label"),
        Check(E.ExpectTableRowCountToBeBetween(min_value=checks.min_rows, max_value=checks.max_rows),
              f"{checks.min_rows}-{checks.max_rows} seed rows"),
    ]


def soft_label_frame(soft_labels: pd.DataFrame, seed: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """Per soft-label row: split, probability min/max, |sum - 1|, entropy / log(K), and (seed rows) whether the
    teacher's top label is the gold one."""
    logits = np.stack(soft_labels["teacher_logits"].to_numpy()).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        probs = softmax(logits)
        entropy = -(probs * np.log(np.clip(probs, 1e-12, 1.0))).sum(1) / np.log(len(labels))
    gold = soft_labels["row_id"].map(seed.set_index("row_id")["label"].map({l: i for i, l in enumerate(labels)}))
    correct = np.where(gold.notna(), probs.argmax(1) == gold.fillna(-1).to_numpy(), np.nan)
    return pd.DataFrame({
        "row_id": soft_labels["row_id"].values, "split": soft_labels["split"].values,
        "prob_min": probs.min(1), "prob_max": probs.max(1), "prob_sum_error": np.abs(probs.sum(1) - 1.0),
        "entropy": entropy, "teacher_correct": correct,
    })


def soft_label_checks(frame: pd.DataFrame, checks: SoftLabelChecks) -> list[Check]:
    """The soft-label suite over :func:`soft_label_frame`."""
    return [
        Check(E.ExpectColumnValuesToNotBeNull(column="prob_sum_error"), "soft labels are finite numbers",
              show="row_id"),
        Check(E.ExpectColumnValuesToBeBetween(column="prob_min", min_value=0.0, max_value=1.0),
              "probabilities are >= 0"),
        Check(E.ExpectColumnValuesToBeBetween(column="prob_max", min_value=0.0, max_value=1.0),
              "probabilities are <= 1"),
        Check(E.ExpectColumnValuesToBeBetween(column="prob_sum_error", max_value=checks.sum_tolerance),
              f"each row's probabilities sum to 1 (within {checks.sum_tolerance:g})", show="row_id"),
        Check(E.ExpectColumnMeanToBeBetween(column="entropy", min_value=checks.min_mean_entropy,
                                            max_value=checks.max_mean_entropy),
              f"mean normalised entropy is {checks.min_mean_entropy:g}-{checks.max_mean_entropy:g}"),
        Check(E.ExpectColumnMeanToBeBetween(column="teacher_correct", min_value=checks.min_teacher_seed_accuracy,
                                            row_condition='split=="seed"', condition_parser="pandas"),
              f"the teacher gets >= {checks.min_teacher_seed_accuracy:.0%} of its seed rows right"),
    ]


def synthetic_checks(synthetic: pd.DataFrame, seed: pd.DataFrame, labels: list[str], seed_checks_: SeedChecks,
                     checks: SyntheticChecks) -> tuple[pd.DataFrame, list[Check]]:
    """The synthetic suite over the kept synthetic rows (row_id, text, label), compared with the seed."""
    texts = synthetic["text"].astype(str).tolist()
    to_seed, _ = nearest_similarity(texts, seed["text"].tolist())
    frame = synthetic[["row_id", "text", "label"]].assign(
        nearest_seed_distance=1.0 - to_seed, nearest_synthetic_similarity=nearest_other_similarity(texts))
    shares = seed["label"].value_counts(normalize=True)
    partition = {"values": list(labels), "weights": [float(shares.get(label, 0.0)) for label in labels]}
    return frame, _row_checks(labels, seed_checks_) + [
        Check(E.ExpectColumnValuesToBeBetween(column="nearest_synthetic_similarity",
                                              max_value=checks.max_near_duplicate_similarity),
              f"no near-duplicate synthetic rows (similarity <= {checks.max_near_duplicate_similarity:g})", show="text"),
        Check(E.ExpectColumnKLDivergenceToBeLessThan(column="label", partition_object=partition,
                                                     threshold=checks.max_label_kl),
              f"label distribution within KL {checks.max_label_kl:g} of the seed's"),
        Check(E.ExpectColumnValuesToBeBetween(column="nearest_seed_distance", min_value=checks.min_seed_distance),
              f"privacy: no synthetic row closer than {checks.min_seed_distance:g} to a seed row", show="text"),
    ]


def ranking_seed_checks(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[Check]]:
    """The re-ranking seed suite over the seed queries' candidate rows (query_id, text, passage_id, passage,
    relevance): every query and passage has text, no candidate is listed twice for a query, and every seed
    query has a relevant candidate and at least one other (the teacher learns by comparing them)."""
    per_query = rows.groupby("query_id")
    frame = rows.assign(
        query_relevant=per_query["relevance"].transform(lambda r: float((r > 0).sum())),
        query_candidates=per_query["passage_id"].transform("size").astype(float),
        pair=rows["query_id"].astype(str) + "\x1f" + rows["passage_id"].astype(str))
    checks = [Check(E.ExpectColumnValuesToNotBeNull(column=c), f"no missing `{c}`") for c in ("text", "passage")]
    return frame, checks + [
        Check(E.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1), "queries have text"),
        Check(E.ExpectColumnValueLengthsToBeBetween(column="passage", min_value=1), "passages have text",
              show="passage_id"),
        Check(E.ExpectColumnValuesToBeUnique(column="pair"), "no candidate is listed twice for a query",
              show="query_id"),
        Check(E.ExpectColumnValuesToBeBetween(column="query_relevant", min_value=1),
              "every seed query has a relevant candidate", show="query_id"),
        Check(E.ExpectColumnValuesToBeBetween(column="query_candidates", min_value=2),
              "every seed query has at least 2 candidates", show="query_id"),
        Check(E.ExpectTableRowCountToBeBetween(min_value=2), "at least 2 candidate rows"),
    ]


def ranking_soft_label_checks(scores: pd.DataFrame, checks: SoftLabelChecks) -> tuple[pd.DataFrame, list[Check]]:
    """The re-ranking soft-label suite over the teacher's scores (query_id, passage_id, relevance, split,
    teacher_score): finite scores, candidates told apart within each query, and on its own seed queries the
    teacher puts a relevant passage first often enough (``min_teacher_seed_accuracy`` as precision@1)."""
    per_query = scores.groupby("query_id")["teacher_score"]
    top = scores.loc[per_query.idxmax().dropna(), ["query_id", "relevance"]].set_index("query_id")["relevance"]
    seed = scores["split"] == "seed"
    frame = scores.assign(
        score_spread=per_query.transform(lambda s: float(s.max() - s.min())),
        seed_top_relevant=np.where(seed, (scores["query_id"].map(top) > 0).astype(float), np.nan))
    return frame, [
        Check(E.ExpectColumnValuesToNotBeNull(column="teacher_score"), "teacher scores are numbers",
              show="query_id"),
        Check(E.ExpectColumnValuesToBeBetween(column="teacher_score", min_value=-1e4, max_value=1e4),
              "teacher scores are finite", show="query_id"),
        Check(E.ExpectColumnValuesToBeBetween(column="score_spread", min_value=1e-6, strict_min=True),
              "the teacher tells each query's candidates apart (scores not all equal)", show="query_id"),
        Check(E.ExpectColumnMeanToBeBetween(column="seed_top_relevant", min_value=checks.min_teacher_seed_accuracy,
                                            row_condition='split=="seed"', condition_parser="pandas"),
              f"the teacher ranks a relevant passage first for >= {checks.min_teacher_seed_accuracy:.0%} of its "
              "seed queries"),
    ]


def teacher_embedding_checks(embeddings: pd.DataFrame) -> tuple[pd.DataFrame, list[Check]]:
    """The suite over a bi-encoder teacher's embeddings (kind, id, embedding) for embedding distillation:
    every text embedded, as a finite unit vector of the same size as the others."""
    vectors = [np.asarray(v, dtype=np.float64) for v in embeddings["embedding"]]
    frame = embeddings.assign(norm=[float(np.linalg.norm(v)) if np.isfinite(v).all() else np.nan for v in vectors],
                              dim=[float(len(v)) for v in vectors])
    size = float(np.median(frame["dim"])) if len(frame) else 0.0
    return frame, [
        Check(E.ExpectColumnValuesToNotBeNull(column="norm"), "teacher embeddings are finite", show="id"),
        Check(E.ExpectColumnValuesToBeBetween(column="norm", min_value=0.99, max_value=1.01),
              "teacher embeddings are unit vectors", show="id"),
        Check(E.ExpectColumnValuesToBeBetween(column="dim", min_value=size, max_value=size),
              "teacher embeddings all have one size", show="id"),
    ]


def synthetic_query_checks(queries: pd.DataFrame, checks: SyntheticChecks) -> tuple[pd.DataFrame, list[Check]]:
    """The synthetic-query suite over the kept queries (query, passage_ids, teacher_scores,
    nearest_real_distance): text, no repeats, far enough from every real query, a scored candidate list."""
    frame = queries.assign(
        candidates=[float(len(ids)) for ids in queries["passage_ids"]],
        max_abs_score=[float(np.max(np.abs(s))) if len(s) else np.nan for s in queries["teacher_scores"]])
    return frame, [
        Check(E.ExpectColumnValuesToNotBeNull(column="query"), "no missing `query`"),
        Check(E.ExpectColumnValueLengthsToBeBetween(column="query", min_value=1), "queries have text"),
        Check(E.ExpectColumnValuesToBeUnique(column="query"), "no repeated synthetic query"),
        Check(E.ExpectColumnValuesToBeBetween(column="nearest_real_distance", min_value=checks.min_seed_distance),
              f"no synthetic query within {checks.min_seed_distance:g} of a real query", show="query"),
        Check(E.ExpectColumnValuesToBeBetween(column="candidates", min_value=2),
              "every synthetic query has its passage and a negative", show="query"),
        Check(E.ExpectColumnValuesToBeBetween(column="max_abs_score", max_value=1e4),
              "teacher scores are finite", show="query"),
    ]


def tabular_seed_checks(seed: pd.DataFrame, schema, checks: SeedChecks) -> tuple[pd.DataFrame, list[Check]]:
    """The tabular seed suite over ``seed`` (row_id, label, the columns of ``schema``, a
    :class:`~stillhouse.tasks.tabular.data.TabularSchema`): columns, numeric types, labels, counts."""
    frame = seed.assign(label_count=seed["label"].map(seed["label"].value_counts()).astype(float))
    return frame, [
        *(Check(E.ExpectColumnToExist(column=c), f"column `{c}` is present")
          for c in ["row_id", "label", *schema.inputs, *schema.sensitive]),
        *(Check(E.ExpectColumnValuesToBeInTypeList(column=c, type_list=_NUMBER_TYPES), f"`{c}` is numeric")
          for c in schema.numeric),
        Check(E.ExpectColumnValuesToNotBeNull(column="label"), "no missing label"),
        Check(E.ExpectColumnValuesToBeInSet(column="label", value_set=list(schema.labels)),
              "labels are in the label set"),
        Check(E.ExpectColumnValuesToBeUnique(column="row_id"), "row ids are unique"),
        Check(E.ExpectColumnValuesToBeBetween(column="label_count", min_value=checks.min_per_label),
              f"every label has at least {checks.min_per_label} seed rows", show="label"),
        Check(E.ExpectTableRowCountToBeBetween(min_value=checks.min_rows, max_value=checks.max_rows),
              f"{checks.min_rows}-{checks.max_rows} seed rows"),
    ]


_NUMBER_TYPES = ["int", "int8", "int16", "int32", "int64", "float", "float32", "float64", "Int64", "Float64"]


def profile_checks(profiles: pd.DataFrame, ranges: dict[str, tuple[float, float]], integral: list[str],
                   categories: dict[str, list[str]], labels: list[str]) -> tuple[pd.DataFrame, list[Check]]:
    """The synthetic-profile suite over the kept profiles (row_id, label, scenario, the columns): plausible ranges
    (``ranges``: numeric column → (low, high)), whole numbers where the seed has them, known categories, labels,
    and each profile's distance to the nearest real record at or above the privacy threshold (``privacy_ok``)."""
    checks = [Check(E.ExpectColumnValuesToBeUnique(column="row_id"), "row ids are unique"),
              Check(E.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)),
                    "labels are in the label set"),
              Check(E.ExpectColumnValuesToBeInSet(column="privacy_ok", value_set=[True]),
                    "privacy: no profile closer to a real record than the threshold", show="scenario")]
    for column, (low, high) in ranges.items():
        checks += [Check(E.ExpectColumnValuesToBeInTypeList(column=column, type_list=_NUMBER_TYPES),
                         f"`{column}` is numeric"),
                   Check(E.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high),
                         f"`{column}` is within its plausible range [{low:g}, {high:g}]", show="scenario")]
    frame = profiles.copy()
    for column in integral:
        frame[f"{column}__whole"] = np.isclose(frame[column].astype(float) % 1, 0) | frame[column].isna()
        checks.append(Check(E.ExpectColumnValuesToBeInSet(column=f"{column}__whole", value_set=[True]),
                            f"`{column}` is a whole number, as in the seed", show="scenario"))
    for column, values in categories.items():
        checks.append(Check(E.ExpectColumnValuesToBeInSet(column=column, value_set=list(values)),
                            f"`{column}` takes one of the seed's categories", show="scenario"))
    return frame, checks
