"""The prepared sets of a tabular run: seed, pool and evaluation rows with their column roles.

Output folder (:class:`TabularData`): ``seed.parquet`` / ``eval.parquet`` (row_id, label, the columns),
``pool.parquet`` (row_id, the columns), ``schema.json`` (labels, positive label, numeric / categorical inputs,
sensitive features and their bins, entity and timestamp) and ``validation.json`` (sources, counts, fingerprints,
what was dropped). With ``data.features`` the files hold entity rows and the columns come from Feast
(:mod:`stillhouse.tasks.tabular.features`), point-in-time correct.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.fingerprint import text_fingerprint
from stillhouse.data.io import atomic_dir, describe_source, read_json, read_source, write_json
from stillhouse.data.prepare import cap_pool, split_sampling
from stillhouse.errors import DataError
from stillhouse.spec import Spec
from stillhouse.tasks.tabular.features import join_features
from stillhouse.tasks.tabular.preprocess import infer_column_types
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import tabular_seed_checks


@dataclass(frozen=True)
class TabularSchema:
    labels: list[str]
    positive: str | None  # binary tasks: the label risk metrics, costs and fairness treat as positive
    numeric: list[str]
    categorical: list[str]
    sensitive: list[str]
    bins: dict[str, list[float]]
    entity: str | None = None
    timestamp: str | None = None
    groups_of: dict[str, dict[str, str]] = field(default_factory=dict)  # value → group, per sensitive feature

    @property
    def inputs(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    @property
    def binary(self) -> bool:
        return len(self.labels) == 2

    def groups(self, frame: pd.DataFrame, column: str) -> np.ndarray:
        """The fairness group of each row for sensitive feature ``column`` (binned when it is numeric)."""
        values = frame[column]
        cuts = self.bins.get(column)
        if not cuts:
            names = values.astype(str).where(values.notna(), "missing")
            return names.map(lambda v: self.groups_of.get(column, {}).get(v, v)).to_numpy()
        edges = [-np.inf, *cuts, np.inf]
        names = [f"<{cuts[0]:g}", *(f"{a:g}-{b:g}" for a, b in zip(cuts, cuts[1:])), f">={cuts[-1]:g}"]
        return pd.cut(pd.to_numeric(values, errors="coerce"), edges, right=False, labels=names).astype(str).to_numpy()


@dataclass(frozen=True)
class TabularData:
    seed: pd.DataFrame
    pool: pd.DataFrame
    eval: pd.DataFrame
    schema: TabularSchema
    report: dict

    @property
    def labels(self) -> list[str]:
        return self.schema.labels

    @classmethod
    def load(cls, folder: str | Path) -> TabularData:
        folder = Path(folder)
        return cls(seed=pd.read_parquet(folder / "seed.parquet"), pool=pd.read_parquet(folder / "pool.parquet"),
                   eval=pd.read_parquet(folder / "eval.parquet"),
                   schema=TabularSchema(**read_json(folder / "schema.json")),
                   report=read_json(folder / "validation.json"))


def label_indices(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    return frame["label"].map({label: i for i, label in enumerate(labels)}).to_numpy(dtype=np.int64)


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 over the rows' values (column order fixed, row ids left out): the identity of a prepared set."""
    columns = sorted(c for c in frame.columns if c != "row_id")
    hashed = pd.util.hash_pandas_object(frame[columns].astype(str), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(columns).encode()).hexdigest()


def row_fingerprints(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """SHA-256 of each row's values in ``columns`` (the soft labels' ``input_fingerprint``)."""
    values = frame[columns].astype(str).to_numpy()
    return [text_fingerprint("\x1f".join(row)) for row in values]


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Text cells as the table means them: an empty cell is missing, and a column whose every present value
    is a number is numeric (CSV files are read as text so that no value is guessed on the way in)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype != object:
            continue
        values = out[column].where(out[column].astype(str).str.strip() != "")
        numbers = pd.to_numeric(values, errors="coerce")
        out[column] = numbers if numbers.notna().sum() == values.notna().sum() and values.notna().any() else values
    return out


def _labelled(frame: pd.DataFrame, field: str, where: str) -> pd.DataFrame:
    if field not in frame.columns:
        raise DataError(f"{where}: no label column `{field}`", "set task.label_field to the label's column")
    label = frame[field]
    missing = label.isna() | (label.astype(str).str.strip() == "")
    if missing.any():
        raise DataError(f"{where}: {int(missing.sum())} row(s) without a `{field}`",
                        "label these rows, or move them to the unlabelled pool (data.pool)")
    return frame.drop(columns=[field]).assign(label=label.astype(str).str.strip().to_numpy())


def _check_labels(frame: pd.DataFrame, labels: list[str], where: str) -> None:
    unknown = ~frame["label"].isin(labels)
    if unknown.any():  # the count, not the values: a mistyped label column may hold personal data
        raise DataError(f"{where}: {int(unknown.sum())} row(s) with a label outside the label set "
                        f"({', '.join(labels[:20])})", "fix the labels, or list them in task.labels")


def _schema(spec: Spec, seed: pd.DataFrame) -> TabularSchema:
    task = spec.task
    labels = task.labels or sorted(seed["label"].unique())
    if len(labels) < 2:
        raise DataError("the seed set has only one label", "a classifier needs rows of at least 2 labels")
    positive = None
    if len(labels) == 2:
        positive = task.positive_label or min(labels, key=lambda label: (int((seed["label"] == label).sum()), label))
    reserved = {"row_id", "label", task.entity, task.timestamp}
    sensitive = list(task.sensitive_features)
    missing = [c for c in [*sensitive, *(task.numeric or []), *(task.categorical or [])] if c not in seed.columns]
    if missing:
        raise DataError(f"column(s) {missing} named in the spec are not in the seed data",
                        "fix task.numeric / categorical / sensitive_features, or the data's header")
    declared = [*(task.numeric or []), *(task.categorical or [])]
    rest = [c for c in seed.columns if c not in reserved and c not in declared
            and (task.sensitive_as_inputs or c not in sensitive)]
    inferred_numeric, inferred_categorical = infer_column_types(seed, rest)
    numeric = task.numeric if task.numeric is not None else inferred_numeric
    categorical = task.categorical if task.categorical is not None else inferred_categorical
    if task.numeric is not None and task.categorical is None:
        categorical = [c for c in rest if c not in numeric]
    if task.categorical is not None and task.numeric is None:
        numeric = [c for c in inferred_numeric if c not in categorical]
    for column in sensitive:
        if pd.api.types.is_numeric_dtype(seed[column]) and column not in task.sensitive_bins \
                and seed[column].nunique() > 10:
            raise DataError(f"sensitive feature `{column}` is numeric with {seed[column].nunique()} values",
                            f"give task.sensitive_bins.{column}: cut points that make groups (e.g. [25])")
    if not numeric and not categorical:
        raise DataError("no input columns left", "declare task.numeric / task.categorical")
    return TabularSchema(labels=list(labels), positive=positive, numeric=list(numeric),
                         categorical=list(categorical), sensitive=sensitive, bins=dict(task.sensitive_bins),
                         entity=task.entity, timestamp=task.timestamp, groups_of=dict(task.sensitive_groups))


def _frames(spec: Spec, report: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    field = spec.task.label_field

    def read(source, role: str) -> pd.DataFrame:
        report["sources"][role] = describe_source(source)
        frame = typed(read_source(source))
        return join_features(spec, frame, role) if spec.data.features is not None else frame

    seed = _labelled(read(spec.data.seed, "seed"), field, f"seed data ({describe_source(spec.data.seed)})")
    seed, rest, held_out = split_sampling(spec, seed, report)
    eval_frame = held_out if spec.data.eval is None else _labelled(
        read(spec.data.eval, "eval"), field, f"eval data ({describe_source(spec.data.eval)})")
    pool = rest.drop(columns=["label"])
    if spec.data.pool is not None:
        extra = read(spec.data.pool, "pool")
        pool = pd.concat([pool, extra.drop(columns=[field], errors="ignore")], ignore_index=True)
    return seed, cap_pool(spec, pool), eval_frame


def _with_ids(frame: pd.DataFrame, role: str) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    return frame.assign(row_id=[f"{role}-{i:07d}" for i in range(len(frame))])[
        ["row_id", *[c for c in frame.columns if c != "row_id"]]]


def prepare_tabular(spec: Spec, out_dir: str | Path, validation_dir: str | Path | None) -> TabularData:
    """Read (or join from Feast), check, split, validate (GE tabular seed suite) and write the prepared sets."""
    report: dict = {"sources": {}, "dropped": {}}
    seed, pool, eval_frame = _frames(spec, report)
    schema = _schema(spec, seed)
    for frame, role in ((seed, "seed"), (eval_frame, "eval")):
        _check_labels(frame, schema.labels, f"{role} data")
    missing = [label for label in schema.labels if label not in set(seed["label"])]
    if missing:
        raise DataError(f"labels with no seed rows: {', '.join(missing[:10])}",
                        "add seed rows for every label, or remove these labels from task.labels")
    keep = [c for c in dict.fromkeys([*schema.inputs, *schema.sensitive, schema.entity, schema.timestamp]) if c]
    for frame, role in ((eval_frame, "eval"), (pool, "pool")):
        absent = [c for c in keep if c not in frame.columns]
        if absent:
            raise DataError(f"{role} data lacks column(s) {absent} that the seed has",
                            "give every data file the same columns")
    seed, eval_frame = seed[[*keep, "label"]], eval_frame[[*keep, "label"]]
    pool = pool[keep]
    seed, pool, eval_frame = _with_ids(seed, "seed"), _with_ids(pool, "pool"), _with_ids(eval_frame, "eval")
    frame, checks = tabular_seed_checks(seed, schema, spec.validation.seed)
    result = run_suite("seed", frame, checks, validation_dir)
    require(result, "correct the seed file, or relax validation.seed in the spec if the data is right")
    report["great_expectations"] = [{"suite": "seed", "expectations": result.evaluated, "rows": result.rows}]
    report["counts"] = {"seed": len(seed), "pool": len(pool), "eval": len(eval_frame), "labels": len(schema.labels)}
    report["seed_per_label"] = {k: int(v) for k, v in seed["label"].value_counts().sort_index().items()}
    report["fingerprints"] = {role: frame_fingerprint(f) for role, f in
                              (("seed", seed), ("pool", pool), ("eval", eval_frame))}
    with atomic_dir(out_dir) as tmp:
        seed.to_parquet(tmp / "seed.parquet", index=False)
        pool.to_parquet(tmp / "pool.parquet", index=False)
        eval_frame.to_parquet(tmp / "eval.parquet", index=False)
        write_json(tmp / "schema.json", asdict(schema))
        write_json(tmp / "validation.json", report)
    return TabularData(seed=seed, pool=pool, eval=eval_frame, schema=schema, report=report)
