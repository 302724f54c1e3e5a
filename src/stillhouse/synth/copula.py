"""Synthetic table rows from a Gaussian copula fitted to real rows, and declared scenario transformations.

The copula keeps each column's own distribution (numeric: the empirical quantiles, interpolated; categorical:
the category frequencies) and the rank correlations between columns: every column is mapped to a standard
normal score (a categorical value to a random point of its category's slice of the cumulative frequencies), the
scores' correlation matrix is estimated, and new rows are drawn from that multivariate normal and mapped back.
Numeric columns that are whole numbers in the data stay whole; missing values are drawn at the column's rate.
Written here (NumPy/SciPy) rather than taken from the SDV family, whose licence (BUSL-1.1) is not permissive.

A scenario (``synthesis.scenarios``) is a named change applied to sampled rows — ``scale``, ``add`` or ``set``
per column — such as an income shock (income × 0.5) or a thin credit file (history set to its minimum).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import norm


@dataclass
class GaussianCopula:
    numeric: list[str]
    categorical: list[str]
    quantiles: dict[str, np.ndarray]  # numeric column → its sorted observed values
    integral: dict[str, bool]
    categories: dict[str, tuple[list, np.ndarray]]  # categorical column → (values, cumulative frequencies)
    missing_rate: dict[str, float]
    correlation: np.ndarray

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: list[str], categorical: list[str], seed: int = 0) -> GaussianCopula:
        rng = np.random.default_rng(seed)
        scores, quantiles, integral, categories = [], {}, {}, {}
        for column in numeric:
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
            observed = np.sort(values[~np.isnan(values)])
            quantiles[column] = observed
            integral[column] = bool(len(observed) and np.all(observed == np.round(observed)))
            # average ranks → uniform scores strictly inside (0, 1); a missing value gets the median score
            ranks = pd.Series(values).rank(method="average").to_numpy()
            u = np.where(np.isnan(values), 0.5, ranks / (len(observed) + 1))
            scores.append(norm.ppf(u))
        for column in categorical:
            counts = frame[column].dropna().astype(str).value_counts()
            cumulative = np.concatenate([[0.0], np.cumsum(counts.to_numpy()) / max(1, counts.sum())])
            categories[column] = (counts.index.tolist(), cumulative)
            position = {v: i for i, v in enumerate(counts.index)}
            index = np.array([position.get(str(v), -1) if pd.notna(v) else -1 for v in frame[column]])
            low = np.where(index >= 0, cumulative[np.maximum(index, 0)], 0.0)
            high = np.where(index >= 0, cumulative[np.maximum(index, 0) + 1], 1.0)
            u = np.clip(low + rng.uniform(size=len(frame)) * (high - low), 1e-6, 1 - 1e-6)
            scores.append(norm.ppf(u))
        matrix = np.stack(scores, axis=1) if scores else np.zeros((len(frame), 0))
        correlation = np.corrcoef(matrix, rowvar=False) if matrix.shape[1] > 1 else np.eye(matrix.shape[1])
        correlation = np.nan_to_num(np.atleast_2d(correlation), nan=0.0)
        np.fill_diagonal(correlation, 1.0)
        missing = {c: float(frame[c].isna().mean()) for c in [*numeric, *categorical]}
        return cls(list(numeric), list(categorical), quantiles, integral, categories, missing, correlation)

    def sample(self, rows: int, seed: int = 0) -> pd.DataFrame:
        rng = np.random.default_rng(seed)
        width = len(self.numeric) + len(self.categorical)
        # the nearest positive semi-definite matrix keeps the draw valid when columns are (nearly) collinear
        values, vectors = np.linalg.eigh(self.correlation)
        root = vectors * np.sqrt(np.clip(values, 0, None))
        u = norm.cdf(rng.standard_normal((rows, width)) @ root.T)
        out = {}
        for j, column in enumerate(self.numeric):
            observed = self.quantiles[column]
            drawn = np.interp(u[:, j], np.linspace(0, 1, len(observed)), observed) if len(observed) else \
                np.full(rows, np.nan)
            out[column] = np.round(drawn) if self.integral[column] else drawn
        for k, column in enumerate(self.categorical, start=len(self.numeric)):
            names, cumulative = self.categories[column]
            index = np.clip(np.searchsorted(cumulative, u[:, k], side="right") - 1, 0, max(0, len(names) - 1))
            out[column] = [names[i] for i in index] if names else [None] * rows
        frame = pd.DataFrame(out)
        for column, rate in self.missing_rate.items():
            if rate > 0:
                frame.loc[rng.uniform(size=rows) < rate, column] = None
        return frame


def apply_scenario(frame: pd.DataFrame, changes: dict[str, dict]) -> pd.DataFrame:
    """``frame`` with each column changed as ``changes`` says: ``{column: {"scale": f} | {"add": x} |
    {"set": value}}``. Missing values stay missing under ``scale`` and ``add``."""
    out = frame.copy()
    for column, change in changes.items():
        (operation, value), = change.items()
        if operation == "scale":
            out[column] = pd.to_numeric(out[column]) * value
        elif operation == "add":
            out[column] = pd.to_numeric(out[column]) + value
        elif operation == "set":
            out[column] = value
        else:
            raise ValueError(f"unknown scenario operation {operation!r} (scale, add or set)")
    return out
