"""Structural checks on labelled and unlabelled data: columns, labels, empty rows, duplicates.

These run in the pipeline's validate step before any model trains. They normalise a source to the
columns ``text`` (and ``label``) and raise a :class:`DataError` naming the file, the rows and the fix.
The Great Expectations suites (distributions, soft-label sanity, privacy) plug in beside these.
"""

from __future__ import annotations

import pandas as pd

from stillhouse.errors import DataError
from stillhouse.spec import TaskSpec


def _rows(index: pd.Index, limit: int = 5) -> str:
    # 1-based data-row numbers (a CSV header is not counted): what a user sees in a spreadsheet, minus the header.
    shown = ", ".join(str(i + 1) for i in list(index)[:limit])
    return shown + (f" and {len(index) - limit} more" if len(index) > limit else "")


def _require_columns(frame: pd.DataFrame, columns: dict[str, str], where: str) -> None:
    for column, field in columns.items():
        if column not in frame.columns:
            available = ", ".join(map(str, frame.columns[:20]))
            raise DataError(f"{where}: column `{column}` not found (columns: {available})",
                            f"rename the column in the file, or set task.{field} in the spec")


def _clean_text(frame: pd.DataFrame, text_field: str, where: str) -> pd.Series:
    text = frame[text_field]
    missing = text.isna() | (text.astype(str).str.strip() == "")
    if missing.any():
        raise DataError(f"{where}: {int(missing.sum())} row(s) with empty `{text_field}` (rows {_rows(text.index[missing])})",
                        "remove or fill these rows")
    return text.astype(str)


def check_labelled(frame: pd.DataFrame, task: TaskSpec, role: str, source: str,
                   labels: list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """Check a labelled set; return it as (text, label) with the label set (given, or sorted from the data)."""
    where = f"{role} data ({source})"
    _require_columns(frame, {task.text_field: "text_field", task.label_field: "label_field"}, where)
    text = _clean_text(frame, task.text_field, where)
    raw_label = frame[task.label_field]
    no_label = raw_label.isna() | (raw_label.astype(str).str.strip() == "")
    if no_label.any():
        raise DataError(f"{where}: {int(no_label.sum())} row(s) without a `{task.label_field}` "
                        f"(rows {_rows(raw_label.index[no_label])})",
                        "label these rows, or move them to the unlabelled pool (data.pool)")
    label = raw_label.astype(str).str.strip()
    if labels is None:
        labels = sorted(label.unique())
        if len(labels) < 2:
            raise DataError(f"{where}: only one label found ({labels[0]!r})", "a classifier needs at least 2 labels")
    unknown = ~label.isin(labels)
    if unknown.any():
        names = ", ".join(repr(x) for x in sorted(label[unknown].unique())[:5])
        raise DataError(f"{where}: unknown label(s) {names} in {int(unknown.sum())} row(s) "
                        f"(rows {_rows(label.index[unknown])}); known labels: {', '.join(labels[:20])}",
                        "fix the labels in the file, or add them to task.labels in the spec")
    return pd.DataFrame({"text": text.values, "label": label.values}), list(labels)


def check_pool(frame: pd.DataFrame, task: TaskSpec, source: str) -> pd.DataFrame:
    """Check an unlabelled pool (a label column, if any, is ignored); return it as (text,)."""
    where = f"pool data ({source})"
    _require_columns(frame, {task.text_field: "text_field"}, where)
    return pd.DataFrame({"text": _clean_text(frame, task.text_field, where).values})


def drop_duplicates(frame: pd.DataFrame, role: str) -> tuple[pd.DataFrame, dict]:
    """Drop repeated texts; a text that carries two different labels is dropped entirely (its label is unknown).

    Returns the cleaned frame and the counts dropped per reason (they go into validation.json).
    """
    exact = frame.duplicated(subset=["text", "label"])
    frame = frame[~exact]
    conflicting = frame["text"].duplicated(keep=False)
    counts = {"exact": int(exact.sum()), "conflicting_labels": int(conflicting.sum())}
    return frame[~conflicting].reset_index(drop=True), counts
