"""The synthesis step: generate → the teacher soft-labels every row → filter → validate (GE) → write.

Output folder::

    synthetic.parquet   kept rows: row_id, text, label (intended), generator, teacher_logits, teacher,
                        teacher_fingerprint, input_fingerprint
    dropped.parquet     every dropped row with its reason, the teacher's label and confidence (for audit)
    synthesis.json      generation stats, kept/dropped counts per reason, label counts seed vs synthetic,
                        and the distribution of each generated row's distance to its nearest seed row

With ``synthesis`` absent the folder holds empty tables and ``{"enabled": false}``, so the pipeline's shape
does not depend on the spec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.fingerprint import text_fingerprint
from stillhouse.data.io import atomic_dir, read_json, write_json
from stillhouse.data.prepare import PreparedData
from stillhouse.evaluate.metrics import softmax
from stillhouse.progress import say
from stillhouse.spec import Spec
from stillhouse.synth.filters import FilterThresholds, filter_synthetic, reason_counts, seed_distance
from stillhouse.synth.generate import generate_synthetic
from stillhouse.teachers.load import load_teacher
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import synthetic_checks

SYNTHETIC_FILE = "synthetic.parquet"
_COLUMNS = ["row_id", "text", "label", "generator", "teacher_logits", "teacher", "teacher_fingerprint",
            "input_fingerprint"]


def thresholds(spec: Spec) -> FilterThresholds:
    """The filter's thresholds: confidence and agreement from ``synthesis.filters``, the rest from ``validation``."""
    f, v = spec.synthesis.filters, spec.validation
    # The augmentation generator never sees label names: a label word in its rows comes from real seed text.
    return FilterThresholds(min_confidence=f.min_confidence, require_agreement=f.require_agreement,
                            drop_label_mentions=f.drop_label_mentions and spec.synthesis.generator != "augment",
                            max_near_duplicate_similarity=v.synthetic.max_near_duplicate_similarity,
                            min_seed_distance=v.synthetic.min_seed_distance, min_text_length=v.seed.min_text_length,
                            max_text_length=v.seed.max_text_length)


def distance_summary(distances: np.ndarray, bins: int = 20) -> dict:
    """Quantiles and a histogram on [0, 1] of nearest-seed distances (the privacy check's distribution)."""
    if len(distances) == 0:
        return {"count": 0}
    counts, edges = np.histogram(np.clip(distances, 0, 1), bins=bins, range=(0.0, 1.0))
    quantiles = {f"p{q}": float(np.percentile(distances, q)) for q in (0, 1, 5, 25, 50, 75)}
    return {"count": len(distances), **quantiles, "histogram": {"edges": edges.round(3).tolist(),
                                                                      "counts": counts.tolist()}}


def write_disabled(out_dir: str | Path) -> dict:
    """The synthesis folder of a run without synthesis: empty tables and ``{"enabled": false}``."""
    say("synthesis: off (no `synthesis` section in the spec)")
    report = {"enabled": False}
    with atomic_dir(out_dir) as tmp:
        pd.DataFrame(columns=_COLUMNS).to_parquet(tmp / SYNTHETIC_FILE, index=False)
        pd.DataFrame(columns=["text", "label", "reason"]).to_parquet(tmp / "dropped.parquet", index=False)
        write_json(tmp / "synthesis.json", report)
    return report


def synthesize(spec: Spec, data_dir: str, teacher_dir: str, out_dir: str, validation_dir: str | None,
               device: str = "cpu") -> dict:
    """Run the synthesis step (see the module docstring); returns the ``synthesis.json`` report."""
    if spec.synthesis is None:
        return write_disabled(out_dir)
    data = PreparedData.load(data_dir)
    generated, stats = generate_synthetic(spec.synthesis, data.seed, data.labels, spec.runtime.seed, device)
    say(f"synthesis: {stats['generated']} rows in {stats['seconds']:.1f} s ({stats['rows_per_s']} rows/s)")
    texts = generated["text"].tolist()
    teacher = load_teacher(teacher_dir, device)
    logits = teacher.logits(texts, desc=f"teacher: labelling {len(texts)} synthetic rows")
    probs = softmax(logits)
    intended = generated["label"].map({label: i for i, label in enumerate(data.labels)}).to_numpy()
    distances = seed_distance(texts, data.seed["text"].tolist())
    reasons = filter_synthetic(texts, intended, probs, distances, thresholds(spec), data.labels)
    keep = reasons == ""
    kept = generated[keep].reset_index(drop=True)
    kept.insert(0, "row_id", [f"synthetic-{i:07d}" for i in range(len(kept))])
    kept = kept.assign(teacher_logits=list(logits[keep]), teacher=teacher.name,
                       teacher_fingerprint=teacher.fingerprint,
                       input_fingerprint=[text_fingerprint(t) for t in kept["text"]])[_COLUMNS]
    dropped = generated[~keep].assign(reason=reasons[~keep], teacher_label=[data.labels[i] for i in
                                                                             probs[~keep].argmax(1)],
                                      teacher_confidence=probs[~keep].max(1))
    counts = reason_counts(reasons)
    dropped_counts = ", ".join(f"{k} {v}" for k, v in counts.items() if v and k != "kept") or "none"
    say(f"synthesis: kept {counts['kept']} of {len(reasons)} rows; dropped: {dropped_counts}")
    report = {
        "enabled": True, **stats, "filter": counts,
        "label_counts": {"seed": _label_counts(data.seed, data.labels), "synthetic": _label_counts(kept, data.labels)},
        "nearest_seed_distance": distance_summary(distances),
    }
    if len(kept):
        frame, checks = synthetic_checks(kept, data.seed, data.labels, spec.validation.seed, spec.validation.synthetic)
        result = run_suite("synthetic", frame, checks, validation_dir)
        report["great_expectations"] = {"suite": "synthetic", "expectations": result.evaluated, "rows": result.rows}
        require(result, "adjust the generator (prompt, temperature) or synthesis.filters, or relax "
                        "validation.synthetic if the rows are right")
    with atomic_dir(out_dir) as tmp:
        kept.to_parquet(tmp / SYNTHETIC_FILE, index=False)
        dropped.to_parquet(tmp / "dropped.parquet", index=False)
        write_json(tmp / "synthesis.json", report)
    return report


def _label_counts(frame: pd.DataFrame, labels: list[str]) -> dict[str, int]:
    counts = frame["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in labels}


def load_synthetic(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    """The kept synthetic rows and the synthesis report written by :func:`synthesize`."""
    folder = Path(folder)
    return pd.read_parquet(folder / SYNTHETIC_FILE), read_json(folder / "synthesis.json")
