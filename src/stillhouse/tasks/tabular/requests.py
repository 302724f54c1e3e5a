"""What ``/score`` asks and answers around the model, without loading one (a tabular student's public service
imports only this): the request's schema and check, the rows checked against the student's columns, and rows read by
entity id from the online feature store the student was trained from (or the one the serving config names: on a
cluster the chart's, backed by Redis)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, Field

from stillhouse.errors import RequestError, Unavailable
from stillhouse.serve.config import LimitsConfig
from stillhouse.serve.schemas import CheckedRequest, decode_json_object, one_list, refuse_unknown
from stillhouse.tasks.tabular.features import online_rows


class Contribution(BaseModel):
    feature: str
    contribution: float = Field(description="How far this column moved the predicted label's logit from the "
                                "training rows' average (positive: towards the label).")


class Score(BaseModel):
    label: str
    probability: float = Field(description="Binary models: probability of the positive label; else of `label`.")
    probabilities: dict[str, float]
    contributions: list[Contribution]
    flagged: bool | None = Field(None, description="Binary models: the decision the evaluation measured — the "
                                 "positive label's probability above the cost threshold, or the packaged "
                                 "post-processing rule's decision.")
    entity_id: str | int | None = None


class ScoreResponse(BaseModel):
    results: list[Score]
    model_tag: str
    model_version: str


SCORE_FIELDS = {"rows", "entity_ids"}
_MAX_COLUMNS = 500


def _check_row(row: object, i: int, limits: LimitsConfig) -> None:
    if not isinstance(row, dict):
        raise RequestError(f"rows[{i}] is not an object", "send each row as {\"column\": value, ...}")
    if len(row) > _MAX_COLUMNS:
        raise RequestError(f"rows[{i}] has {len(row)} columns; the limit is {_MAX_COLUMNS}", "send the model's "
                           "columns only")
    for key, value in row.items():
        if len(key) > 200:
            raise RequestError(f"rows[{i}] has a column name over 200 characters", "send the model's columns")
        if isinstance(value, str):
            if len(value) > limits.max_text_chars:
                raise RequestError(f"rows[{i}] has a value over {limits.max_text_chars} characters",
                                   "send the column's value")
        elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise RequestError(f"rows[{i}] has a value that is not a string, number or null",
                               "send each column as a string, a number or null")


def check_score(body: bytes, limits: LimitsConfig) -> CheckedRequest:
    """A /score request: exactly one of ``rows`` (objects of raw column values) and ``entity_ids`` (ids whose
    features the online feature store holds), at most ``limits.max_texts`` of them. Rows are never audit
    texts: they are personal data, and carry no free text to redact."""
    payload = decode_json_object(body)
    refuse_unknown(payload, SCORE_FIELDS)
    key, items = one_list(payload, "score", ("rows", "entity_ids"), limits.max_texts,
                           "raw feature rows as `rows`, or ids to look up as `entity_ids`",
                           "split them over several requests")
    for i, item in enumerate(items):
        if key == "rows":
            _check_row(item, i, limits)
        elif isinstance(item, bool) or not isinstance(item, (str, int)) or (isinstance(item, str) and
                                                                              not 0 < len(item) <= 200):
            raise RequestError(f"entity_ids[{i}] is not a string (1-200 characters) or an integer",
                               "send entity ids as strings or integers")
    return CheckedRequest(payload, [])


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


def check_sensitive(rows: list[dict] | None, allowed: dict[str, list[str] | None] | None) -> None:
    """A student packaged with a post-processing rule decides by the sensitive features: every row must carry each
    one (not null) and, for a categorical one, a value the rule was fitted on — else the row could not be decided
    by its group's rule. The value is never repeated in the error."""
    for i, row in enumerate(rows or []):
        for column, values in (allowed or {}).items():
            value = row.get(column)
            if value is None:
                raise RequestError(f"rows[{i}]: `{column}` is null, and this model decides by it (post-processing)",
                                   f"send `{column}`; the model card lists its values")
            if values is not None and str(value).strip() not in values:
                raise RequestError(f"rows[{i}]: `{column}` is not one of the values this model's decision rule was "
                                   "fitted on", f"send `{column}` as the training data wrote it; the model card "
                                   "lists the groups")


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
