"""The tabular student: its fitted preprocessing and a small MLP (or a linear model) in one folder.

Folder: ``tabular.json`` (:class:`TabularInfo`: labels, layer widths, the preprocessed baseline row, the fitted
calibration temperature), ``preprocess.json`` (:class:`~stillhouse.tasks.tabular.preprocess.Preprocessor`) and
``model.safetensors`` (weights only: loading runs no code). Serving needs only the raw feature columns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from stillhouse.errors import ModelError
from stillhouse.tasks.tabular.preprocess import Preprocessor

INFO_FILE = "tabular.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass(frozen=True)
class TabularInfo:
    labels: list[str]
    inputs: int  # preprocessed feature count
    hidden: list[int]
    dropout: float
    positive: str | None = None
    baseline: list[float] = field(default_factory=list)  # mean preprocessed row: what contributions are against
    temperature: float = 1.0
    contributions: int = 3  # top columns returned per scored row
    threshold: float | None = None  # binary: the cost threshold above which the positive label is flagged
    max_length: int = 0  # the training loop's field for text; no tokens here


class TabularMLP(nn.Module):
    """Preprocessed features → hidden layers (ReLU, dropout) → ``head`` (one logit per label)."""

    def __init__(self, inputs: int, hidden: list[int], labels: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = inputs
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, labels)

    def head_parameters(self):
        """What the training loop moves at the head learning rate (``distill.training``)."""
        return self.head.parameters()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(features))


@dataclass
class TabularStudent:
    model: TabularMLP
    preprocessor: Preprocessor
    info: TabularInfo

    def features(self, rows: pd.DataFrame | list[dict]) -> np.ndarray:
        """Preprocessed rows: a DataFrame, or mappings of raw column values (a request's rows)."""
        if isinstance(rows, pd.DataFrame):
            return self.preprocessor.transform(rows)
        return self.preprocessor.transform_records(rows)

    def logits(self, frame: pd.DataFrame | list[dict], batch_size: int = 4096) -> np.ndarray:
        x = self.features(frame)
        self.model.eval()
        with torch.no_grad():
            return np.concatenate([self.model(torch.from_numpy(x[i:i + batch_size])).numpy()
                                   for i in range(0, len(x), batch_size)] or [np.zeros((0, len(self.info.labels)))])

    def contributions(self, frame: pd.DataFrame | list[dict], top: int) -> list[list[dict]]:
        """Per row, the ``top`` raw columns that moved the predicted label's logit most from the baseline row
        (gradient × (row − baseline) on the preprocessed features, summed per raw column: exact for a linear
        student, a first-order attribution for an MLP). Positive: towards the predicted label."""
        if top == 0 or not len(frame):
            return [[] for _ in range(len(frame))]
        x = torch.from_numpy(self.features(frame)).requires_grad_(True)
        self.model.eval()
        logits = self.model(x)
        chosen = logits.argmax(1)
        logits.gather(1, chosen[:, None]).sum().backward()
        delta = (x.detach() - torch.tensor(self.info.baseline)) * x.grad
        owners = feature_owners(self.preprocessor)
        per_column = np.zeros((len(frame), len(owners.columns)))
        np.add.at(per_column.T, owners.index, delta.numpy().T)
        order = np.argsort(-np.abs(per_column), axis=1)[:, :top]
        return [[{"feature": owners.columns[j], "contribution": round(float(per_column[i, j]), 6)} for j in row]
                for i, row in enumerate(order)]


@dataclass(frozen=True)
class _Owners:
    columns: list[str]
    index: np.ndarray  # preprocessed feature → position in columns


def feature_owners(pre: Preprocessor) -> _Owners:
    columns = [*pre.numeric, *pre.categorical]
    index = list(range(len(pre.numeric)))
    for k, column in enumerate(pre.categorical):
        index += [len(pre.numeric) + k] * (len(pre.categories[column]) + 2)
    return _Owners(columns, np.asarray(index, dtype=np.int64))


def new_student(preprocessor: Preprocessor, seed_rows: pd.DataFrame, labels: list[str], positive: str | None,
                hidden: list[int], dropout: float, seed: int, contributions: int = 3,
                threshold: float | None = None) -> TabularStudent:
    torch.manual_seed(seed)
    inputs = len(preprocessor.feature_names)
    baseline = preprocessor.transform(seed_rows).mean(axis=0).tolist()
    info = TabularInfo(labels=list(labels), inputs=inputs, hidden=list(hidden), dropout=dropout, positive=positive,
                       baseline=baseline, contributions=contributions, threshold=threshold)
    return TabularStudent(TabularMLP(inputs, hidden, len(labels), dropout), preprocessor, info)


def save_tabular(student: TabularStudent, folder: str | Path) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    student.preprocessor.save(folder)
    (folder / INFO_FILE).write_text(json.dumps(asdict(student.info), indent=2), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in student.model.state_dict().items()}, str(folder / WEIGHTS_FILE))


def read_tabular_info(folder: str | Path) -> TabularInfo:
    path = Path(folder) / INFO_FILE
    if not path.is_file():
        raise ModelError(f"{folder} is not a tabular student (no {INFO_FILE})", "point at a student folder")
    return TabularInfo(**json.loads(path.read_text(encoding="utf-8")))


def load_tabular(folder: str | Path) -> TabularStudent:
    from safetensors.torch import load_file

    info = read_tabular_info(folder)
    model = TabularMLP(info.inputs, info.hidden, len(info.labels), info.dropout)
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))
    model.eval()
    return TabularStudent(model, Preprocessor.load(folder), info)


def set_tabular_temperature(folder: str | Path, temperature: float) -> None:
    """Record the fitted calibration temperature in a saved student's ``tabular.json``."""
    info = replace(read_tabular_info(folder), temperature=float(temperature))
    (Path(folder) / INFO_FILE).write_text(json.dumps(asdict(info), indent=2), encoding="utf-8")
