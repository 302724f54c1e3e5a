"""Raw feature rows → the float matrix a tabular model reads, fitted once and saved with the model.

Numeric columns: missing values become the fitted median, then each column is standardised (mean 0, sd 1 on
the fitting rows; a constant column stays 0). Categorical columns: one-hot over the categories seen while
fitting (at most ``max_categories`` per column, the most frequent; the rest share an ``other`` column), with a
``missing`` column; a category never seen while fitting counts as ``other``. Serving needs only the raw
columns: the encoder is part of the saved model folder (``preprocess.json``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.errors import DataError

PREPROCESS_FILE = "preprocess.json"
OTHER, MISSING = "__other__", "__missing__"


def infer_column_types(frame: pd.DataFrame, columns: list[str]) -> tuple[list[str], list[str]]:
    """(numeric, categorical) of ``columns``: numbers (not booleans) are numeric, everything else categorical."""
    numeric = [c for c in columns
               if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    return numeric, [c for c in columns if c not in numeric]


@dataclass(frozen=True)
class Preprocessor:
    numeric: list[str]
    categorical: list[str]
    medians: list[float]
    means: list[float]
    scales: list[float]
    categories: dict[str, list[str]]

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str],
            max_categories: int = 20) -> Preprocessor:
        missing = [c for c in [*numeric, *categorical] if c not in frame.columns]
        if missing:
            raise DataError(f"feature column(s) {missing} are not in the data", "fix task.numeric / "
                            "task.categorical, or the data's header")
        values = _numeric_block(frame, numeric)
        medians = np.nan_to_num(np.nanmedian(values, axis=0), nan=0.0) if numeric else np.zeros(0)
        filled = np.where(np.isnan(values), medians, values)
        means, scales = filled.mean(axis=0), filled.std(axis=0)
        categories = {c: [str(v) for v in frame[c].dropna().astype(str).value_counts().index[:max_categories]]
                      for c in categorical}
        return cls(list(numeric), list(categorical), medians.tolist(), means.tolist(),
                   np.where(scales > 0, scales, 1.0).tolist(), categories)

    @property
    def feature_names(self) -> list[str]:
        """One name per output column: the numeric columns, then ``column=category`` per one-hot column."""
        return [*self.numeric, *(f"{c}={v}" for c in self.categorical
                                 for v in [*self.categories[c], OTHER, MISSING])]

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """``[rows, len(feature_names)]`` float32. Missing columns are an error naming them."""
        absent = [c for c in [*self.numeric, *self.categorical] if c not in frame.columns]
        if absent:
            raise DataError(f"the rows lack feature column(s) {absent}", "send every feature the model was "
                            "trained on (its model card lists them)")
        values = _numeric_block(frame, self.numeric)
        values = np.where(np.isnan(values), np.asarray(self.medians), values)
        blocks = [(values - np.asarray(self.means)) / np.asarray(self.scales)]
        for column in self.categorical:
            known = self.categories[column]
            index = {v: i for i, v in enumerate(known)}
            raw = frame[column]
            # one column at a time, not one value: this runs on every scored request
            position = raw.astype(str).map(index).fillna(len(known)).to_numpy(dtype=np.int64)
            position[raw.isna().to_numpy()] = len(known) + 1
            onehot = np.zeros((len(frame), len(known) + 2))
            onehot[np.arange(len(frame)), position] = 1.0
            blocks.append(onehot)
        return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((len(frame), 0), np.float32)

    def transform_records(self, rows: list[dict]) -> np.ndarray:
        """:meth:`transform` for rows given as mappings (a scoring request), without building a DataFrame: the
        same output, at a fraction of the cost for the few rows of a request (pandas' per-call overhead was
        most of the student's per-row latency)."""
        lookup = self._lookup
        out = np.zeros((len(rows), lookup.width), dtype=np.float32)
        for i, row in enumerate(rows):
            absent = [c for c in lookup.columns if c not in row]
            if absent:
                raise DataError(f"the rows lack feature column(s) {absent}", "send every feature the model was "
                                "trained on (its model card lists them)")
            for j, (column, median, mean, scale) in enumerate(lookup.numeric):
                value = _number(row[column], column)
                out[i, j] = ((median if value is None else value) - mean) / scale
            for column, offset, index, unknown in lookup.categorical:
                value = row[column]
                missing = value is None or (isinstance(value, float) and value != value)
                out[i, offset + (unknown + 1 if missing else index.get(str(value), unknown))] = 1.0
        return out

    @cached_property
    def _lookup(self) -> _Lookup:
        """The per-column constants :meth:`transform_records` needs, built once per preprocessor (a cached
        property writes the instance's ``__dict__`` directly, so it works on this frozen dataclass)."""
        numeric = list(zip(self.numeric, self.medians, self.means, self.scales))
        categorical, offset = [], len(self.numeric)
        for column in self.categorical:
            known = self.categories[column]
            categorical.append((column, offset, {v: i for i, v in enumerate(known)}, len(known)))
            offset += len(known) + 2
        return _Lookup([*self.numeric, *self.categorical], numeric, categorical, offset)

    def save(self, folder: str | Path) -> None:
        (Path(folder) / PREPROCESS_FILE).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path) -> Preprocessor:
        return cls(**json.loads((Path(folder) / PREPROCESS_FILE).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class _Lookup:
    columns: list[str]
    numeric: list[tuple[str, float, float, float]]  # column, median, mean, scale
    categorical: list[tuple[str, int, dict[str, int], int]]  # column, first output column, index, unknown position
    width: int


def _number(value, column: str) -> float | None:
    """A numeric cell of a record as a float (None when missing); not a number: an error naming the column."""
    if value is None or isinstance(value, bool):
        return None if value is None else float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return None if value != value else float(value)
    try:
        return float(value) if str(value).strip() else None
    except ValueError:
        raise DataError(f"numeric column `{column}` has 1 value(s) that are not numbers",
                        f"clean the column, or declare `{column}` categorical") from None


def _numeric_block(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """The numeric columns as float64, NaN where missing; a value that is not a number is an error naming the
    column (never the value: rows may hold personal data)."""
    out = np.empty((len(frame), len(columns)))
    for j, column in enumerate(columns):
        converted = pd.to_numeric(frame[column], errors="coerce")
        bad = converted.isna() & frame[column].notna()
        if bad.any():
            raise DataError(f"numeric column `{column}` has {int(bad.sum())} value(s) that are not numbers",
                            f"clean the column, or declare `{column}` categorical")
        out[:, j] = converted.to_numpy(dtype=np.float64)
    return out
