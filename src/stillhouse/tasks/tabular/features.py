"""Features from a Feast repository: point-in-time training rows and online rows for serving.

Training: the spec's data files hold entity rows (``task.entity``, ``task.timestamp``, the label); each gets the
feature service's values as they were at its timestamp (``get_historical_features``: a feature row newer than
the label's timestamp is never used). The embedded default is Feast's DuckDB offline store and a SQLite online
store (``infra/feast/credit``); the file/dask offline store drops entity rows whose timestamp precedes the first
feature row, so the row count is checked here, whatever the store. Serving: ``online_rows`` reads the latest
materialised values per entity id (SQLite here, Redis on a cluster).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from datetime import timezone
from pathlib import Path

import pandas as pd

from stillhouse.errors import DataError, StillhouseError
from stillhouse.progress import say

_APPLIED: set[str] = set()


@contextlib.contextmanager
def _quiet():
    """Feast prints progress and warnings to stdout and its loggers; a step's output keeps only ours."""
    previous = logging.getLogger("feast").level
    logging.getLogger("feast").setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.getLogger("feast").setLevel(previous)


def feature_store(repo: str | Path, apply: bool = True):
    """The Feast store of ``repo`` (a folder with ``feature_store.yaml``), its definitions applied once per
    process (``feast apply``: registers entities, views and services; idempotent)."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = Path(repo)
    config_file = repo / "feature_store.yaml"
    if not config_file.is_file():
        raise DataError(f"no Feast repository at {repo} (no feature_store.yaml)",
                        "point data.features.repo at a Feast repository, e.g. infra/feast/credit")
    key = str(repo.resolve())
    if apply and key not in _APPLIED:
        sys.path.insert(0, key)  # Feast imports the repository's definition files as top-level modules:
        for file in repo.glob("*.py"):  # another repository's `features` module must not stand in for this one's
            sys.modules.pop(file.stem, None)
        try:
            with _quiet():
                apply_total(load_repo_config(repo, config_file), repo, skip_source_validation=False)
        finally:
            sys.path.remove(key)
        _APPLIED.add(key)
    return FeatureStore(repo_path=str(repo))


def _service(store, name: str):
    try:
        return store.get_feature_service(name)
    except Exception:  # noqa: BLE001 - Feast raises its own not-found types per registry kind
        known = ", ".join(sorted(s.name for s in store.list_feature_services())) or "none"
        raise DataError(f"no feature service `{name}` in the Feast repository (known: {known})",
                        "set data.features.feature_service to one of them") from None


def join_features(spec, frame: pd.DataFrame, role: str) -> pd.DataFrame:
    """``frame``'s entity rows with the feature service's values as of each row's timestamp."""
    features, task = spec.data.features, spec.task
    for column in (task.entity, task.timestamp):
        if column not in frame.columns:
            raise DataError(f"{role} entity rows lack column `{column}`",
                            "give each row the entity id (task.entity) and event time (task.timestamp)")
    store = feature_store(features.repo)
    service = _service(store, features.feature_service)
    entity_df = frame.rename(columns={task.timestamp: "event_timestamp"})
    stamps = pd.to_datetime(entity_df["event_timestamp"], utc=True, format="mixed", errors="coerce")
    if stamps.isna().any():
        raise DataError(f"{role} entity rows: {int(stamps.isna().sum())} value(s) of `{task.timestamp}` are not "
                        "times", f"write `{task.timestamp}` as ISO 8601 (2024-01-31T09:00:00Z)")
    entity_df["event_timestamp"] = stamps
    entity_df["_stillhouse_order"] = range(len(entity_df))
    with _quiet():
        joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    if len(joined) != len(frame):
        raise StillhouseError(f"the feature store returned {len(joined)} rows for {len(frame)} {role} entity rows",
                              "use an offline store that keeps every entity row (the DuckDB store); the file "
                              "store drops rows older than the first feature row")
    joined = joined.sort_values("_stillhouse_order").drop(columns=["_stillhouse_order"]).reset_index(drop=True)
    joined = joined.rename(columns={"event_timestamp": task.timestamp})
    if role == "seed" and features.materialize:
        end = entity_df["event_timestamp"].max().to_pydatetime().astimezone(timezone.utc)
        with _quiet():
            store.materialize_incremental(end_date=end)
        say(f"features: online store loaded up to {end:%Y-%m-%d %H:%M} UTC")
    return joined


def online_rows(repo: str | Path, service_name: str, entity: str, ids: list) -> pd.DataFrame:
    """The latest online feature values of entity ids ``ids`` (one row each, in order; NaN where an id has none)."""
    store = feature_store(repo, apply=False)
    service = _service(store, service_name)
    with _quiet():
        return store.get_online_features(features=service, entity_rows=[{entity: i} for i in ids]).to_df()
