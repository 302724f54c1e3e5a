"""What ``/score`` needs besides the model: the request rows checked against the student's columns, and rows
read by entity id from the online feature store the student was trained from (or the one the serving config
names: on a cluster the chart's, backed by Redis)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from stillhouse.errors import RequestError, Unavailable


def check_rows(rows: list[dict] | None, columns: list[str], numeric: list[str]) -> None:
    """Every row has every column the student reads, and a number (or null: imputed) in each numeric one.
    Columns the student does not read are ignored (a feature store row carries its sensitive features too)."""
    for i, row in enumerate(rows or []):
        missing = [c for c in columns if c not in row]
        if missing:
            raise RequestError(f"rows[{i}] lacks column(s) {missing[:10]}", "send every column the model card lists "
                               "(null where a value is unknown)")
        for column in numeric:
            value = row[column]
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise RequestError(f"rows[{i}]: `{column}` is numeric, and its value is not a number",
                                       f"send `{column}` as a number, or null") from None
            if isinstance(value, float) and not math.isfinite(value):
                raise RequestError(f"rows[{i}]: `{column}` is not a finite number", f"send `{column}` as a number")


@dataclass
class OnlineFeatures:
    repo: str
    feature_service: str
    entity: str
    columns: list[str]

    @classmethod
    def for_model(cls, features: dict | None, repo_override: str | None, columns: list[str]) -> OnlineFeatures:
        if not features:
            raise RequestError("this student was trained without a feature store, so it cannot look entities up",
                               "send the raw columns as `rows`")
        return cls(repo_override or features["repo"], features["feature_service"], features["entity"], columns)

    def rows(self, ids: list) -> list[dict]:
        """The online feature rows of ``ids``, as /score rows; an id with no features is a RequestError."""
        from stillhouse.tasks.tabular.features import online_rows

        try:
            frame = online_rows(self.repo, self.feature_service, self.entity, ids)
        except RequestError:
            raise
        except (ValueError, TypeError):  # Feast converting an id to the entity's key type: the request's fault
            raise RequestError("entity ids do not fit the entity's key type (e.g. text for a numeric id)",
                               "send the ids as the feature store keys them") from None
        except Exception as exc:  # noqa: BLE001 - any store failure (Redis down, registry unreadable) is a 503
            raise Unavailable(f"the online feature store cannot be read ({type(exc).__name__})",
                              "retry later; check the feature store's connection") from None
        present = [c for c in self.columns if c in frame.columns]
        unknown = frame[present].isna().all(axis=1).to_numpy() if present else [True] * len(frame)
        if any(unknown):
            raise RequestError(f"{int(sum(unknown))} of {len(ids)} entity id(s) have no features in the online "
                               "store", "check the ids, or materialise the feature views (feast materialize)")
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        return [{k: v for k, v in r.items() if k != self.entity} for r in records]
