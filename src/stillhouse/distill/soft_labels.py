"""Soft labels: the teacher's logits for every seed and pool row, with their lineage.

Stored as logits, not probabilities, so a later run can change the temperature without asking the
teacher again. Columns: ``row_id``, ``split`` (seed | pool | synthetic), ``teacher_logits`` (list of floats,
label order of ``labels.json``), ``temperature`` (the one the student was configured with), ``teacher``
(which teacher or ensemble of teachers produced them), ``teacher_fingerprint``
(SHA-256 of the teacher folder) and ``input_fingerprint`` (SHA-256 of the row's text).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.fingerprint import text_fingerprint
from stillhouse.data.io import atomic_file
from stillhouse.teachers.load import EncoderTeacher, Teacher

SOFT_LABELS_FILE = "soft_labels.parquet"


def soft_label_table(teacher: Teacher, frames: dict[str, pd.DataFrame], temperature: float,
                     embeddings: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Run ``teacher`` over each named frame (``row_id``, ``text``) and return the soft-label table. Given an
    ``embeddings`` dict and an encoder teacher, each split's pooled teacher embeddings go into it from the same
    forward pass (representation distillation); other teachers leave it empty."""
    parts = []
    for split, frame in frames.items():
        texts = frame["text"].tolist()
        desc = f"teacher: soft-labelling {split} ({len(texts)} rows)"
        if embeddings is not None and isinstance(teacher, EncoderTeacher):
            logits, embeddings[split] = teacher.logits_and_embeddings(texts, desc)
        else:
            logits = teacher.logits(texts, desc=desc)
        parts.append(soft_label_part(frame, split, logits, teacher, temperature))
    return pd.concat(parts, ignore_index=True)


def soft_label_part(frame: pd.DataFrame, split: str, logits: np.ndarray, teacher: Teacher,
                    temperature: float) -> pd.DataFrame:
    """Soft-label rows for ``frame`` (``row_id``, ``text``) from logits already computed by ``teacher``."""
    return pd.DataFrame({
        "row_id": frame["row_id"].values, "split": split, "teacher_logits": list(np.asarray(logits, np.float32)),
        "temperature": temperature, "teacher": teacher.name, "teacher_fingerprint": teacher.fingerprint,
        "input_fingerprint": [text_fingerprint(t) for t in frame["text"]],
    })


def write_soft_labels(table: pd.DataFrame, path: str | Path) -> None:
    with atomic_file(path, "wb") as handle:
        table.to_parquet(handle, index=False)


def read_soft_labels(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def attach_teacher_logits(frame: pd.DataFrame, soft_labels: pd.DataFrame, split: str,
                          fingerprints: list[str] | None = None) -> np.ndarray:
    """Teacher logits ``[len(frame), classes]`` aligned to ``frame`` by row id; checks the input fingerprints
    (``fingerprints``, default: of each row's text) so soft labels from another version of the data cannot be
    joined silently."""
    table = soft_labels[soft_labels["split"] == split].set_index("row_id")
    if frame.empty:  # e.g. no unlabelled pool: all rows were labelled
        return np.zeros((0, len(soft_labels["teacher_logits"].iloc[0])), dtype=np.float32)
    missing = ~frame["row_id"].isin(table.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} {split} rows have no soft label")
    rows = table.loc[frame["row_id"]]
    expected = fingerprints if fingerprints is not None else [text_fingerprint(t) for t in frame["text"]]
    if list(rows["input_fingerprint"]) != expected:
        raise ValueError(f"soft labels for {split} were computed on different text (fingerprint mismatch)")
    return np.stack(rows["teacher_logits"].to_numpy()).astype(np.float32)
