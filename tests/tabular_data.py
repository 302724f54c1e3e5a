"""A tiny credit-like table and a Feast repository over it, for the tabular tests (deterministic)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def credit_frame(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """Borrowers whose default risk rises with debt over income, short history and late payments."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(8, 0.4, rows).round(0)
    debt = (income * rng.uniform(0.05, 1.5, rows)).round(0)
    months = rng.integers(6, 60, rows)
    history = rng.choice(["paid", "late", "none"], rows, p=[0.6, 0.25, 0.15])
    sex = rng.choice(["female", "male"], rows, p=[0.4, 0.6])
    age = rng.integers(19, 70, rows)
    risk = 2.2 * debt / income + 0.8 * (history == "late") + 0.4 * (history == "none") - months / 60
    bad = risk + rng.normal(0, 0.5, rows) > np.quantile(risk, 0.7)
    return pd.DataFrame({"borrower_id": np.arange(1, rows + 1), "income": income, "debt": debt, "months": months,
                         "history": history, "sex": sex, "age": age,
                         "label": np.where(bad, "bad", "good"),
                         "application_time": [START + timedelta(days=int(i)) for i in range(rows)]})


FEATURE_STORE_YAML = """project: {project}
provider: local
registry: {registry}
offline_store:
  type: duckdb
online_store:
{online}
entity_key_serialization_version: 3
"""

FEATURES_PY = '''
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

DATA = Path(__file__).resolve().parent / "data"
borrower = Entity(name="borrower", join_keys=["borrower_id"], value_type=ValueType.INT64)
profile = FeatureView(name="profile", entities=[borrower], ttl=timedelta(days=3650),
                      source=FileSource(path=str(DATA / "profile.parquet"), timestamp_field="event_timestamp"),
                      schema=[Field(name="income", dtype=Float64), Field(name="months", dtype=Int64),
                              Field(name="sex", dtype=String), Field(name="age", dtype=Int64)])
history = FeatureView(name="history", entities=[borrower], ttl=timedelta(days=3650),
                      source=FileSource(path=str(DATA / "history.parquet"), timestamp_field="event_timestamp"),
                      schema=[Field(name="debt", dtype=Float64), Field(name="history", dtype=String)])
credit_model = FeatureService(name="credit_model", features=[profile, history])
'''


def write_feast_repo(folder: Path, frame: pd.DataFrame, project: str = "tiny_credit",
                     online: str = "  type: sqlite\n  path: data/online.db") -> Path:
    """A Feast repository over ``frame``: feature rows stamped one hour before each application (history: one
    day before); returns the entity rows file (borrower_id, application_time, label)."""
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    (folder / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(project=project,
                                                                         registry="data/registry.db",
                                                                         online=online))
    (folder / "features.py").write_text(FEATURES_PY)
    stamp = pd.to_datetime(frame["application_time"], utc=True)
    frame[["borrower_id", "income", "months", "sex", "age"]].assign(
        event_timestamp=stamp - pd.Timedelta(hours=1)).to_parquet(data / "profile.parquet", index=False)
    frame[["borrower_id", "debt", "history"]].assign(
        event_timestamp=stamp - pd.Timedelta(days=1)).to_parquet(data / "history.parquet", index=False)
    entity_rows = folder / "entity_rows.csv"
    frame[["borrower_id", "application_time", "label"]].to_csv(entity_rows, index=False)
    return entity_rows


def disparate_frame(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """Borrowers of two groups, where group `b` defaults far more often and a proxy column (`region`, 90 % aligned
    with the group) lets a model that never sees the group flag it: a planted disparity a fairness constraint can
    remove."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], rows, p=[0.6, 0.4])
    region = np.where(rng.random(rows) < 0.9, np.where(group == "b", "north", "south"),
                      np.where(group == "b", "south", "north"))
    income = rng.lognormal(8, 0.3, rows).round(0)
    debt = (income * rng.uniform(0.05, 1.0, rows)).round(0)
    risk = 1.5 * debt / income + 1.6 * (group == "b") + rng.normal(0, 0.4, rows)
    bad = risk > np.quantile(risk, 0.65)
    return pd.DataFrame({"income": income, "debt": debt, "region": region, "group": group,
                         "label": np.where(bad, "bad", "good")})
