"""Thresholds of the Great Expectations suites (seed, soft labels, synthetic)."""

from __future__ import annotations

from pydantic import Field

from stillhouse.spec.base import _Strict


class SeedChecks(_Strict):
    """Great Expectations checks on the seed set the teacher learns from (after sampling)."""

    min_per_label: int = Field(
        3, ge=1, description="Fewest seed examples a label may have (a typo'd label usually has one or two).")
    min_rows: int = Field(6, ge=1, description="Fewest seed rows in all (2 labels x 3 examples).")
    max_rows: int = Field(1_000_000, ge=1, description="Most seed rows (a wrong file is often far too large).")
    min_text_length: int = Field(2, ge=1, description="Shortest text, in characters.")
    max_text_length: int = Field(20_000, ge=1, description="Longest text, in characters.")


class SoftLabelChecks(_Strict):
    """Great Expectations checks on the teacher's soft labels before a student learns from them."""

    sum_tolerance: float = Field(1e-3, gt=0, description="How far a row's probabilities may sum from 1.")
    max_mean_entropy: float = Field(
        0.98, gt=0, le=1, description="Highest mean entropy (as a fraction of log(#labels)): a teacher at the "
        "maximum says nothing (uniform on every row).")
    min_mean_entropy: float = Field(
        0.0, ge=0, lt=1, description="Lowest mean entropy: raise it to catch a teacher that is overconfident everywhere.")
    min_teacher_seed_accuracy: float = Field(
        0.5, ge=0, le=1, description="The teacher must get at least this share of its own seed rows right "
        "(lower it for zero-shot LLM teachers on many labels).")


class SyntheticChecks(_Strict):
    """Great Expectations checks on the synthetic rows kept after filtering."""

    max_label_kl: float = Field(
        0.5, gt=0, description="Largest KL divergence of the synthetic label distribution from the seed's.")
    max_near_duplicate_similarity: float = Field(
        0.9, gt=0, le=1, description="Highest similarity (char n-gram cosine, case and punctuation ignored) between "
        "two synthetic rows (one word changed in a short sentence: about 0.89). The synthesis filter drops rows above.")
    min_seed_distance: float = Field(
        0.2, ge=0, lt=1, description="Privacy: every synthetic row at least this far (1 - cosine) from every "
        "seed row, so no seed record is copied or lightly edited into training data (one word changed in a short "
        "sentence is about 0.11, a clause dropped about 0.22). The synthesis filter drops rows closer than this.")


class ValidationSpec(_Strict):
    """Thresholds of the three Great Expectations suites (a failing suite stops the pipeline)."""

    seed: SeedChecks = SeedChecks()
    soft_labels: SoftLabelChecks = SoftLabelChecks()
    synthetic: SyntheticChecks = SyntheticChecks()
