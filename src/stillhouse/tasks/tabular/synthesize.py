"""Synthetic borrower profiles: a Gaussian copula fitted to the seed, declared scenarios, the teacher's labels,
and the filters (plausible ranges, privacy distance, teacher confidence) recorded per scenario.

``synthetic.parquet`` (row_id, scenario, the columns, label, teacher_logits), ``dropped.parquet`` (scenario,
reason: no column values, which may be near-copies of real records) and ``synthesis.json`` (per scenario:
generated, kept and dropped by reason, share labelled positive; the privacy threshold; the suite).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.io import atomic_dir, read_json, write_json
from stillhouse.errors import SpecError
from stillhouse.progress import say
from stillhouse.spec import Spec
from stillhouse.synth.copula import GaussianCopula, apply_scenario
from stillhouse.tasks.tabular.data import TabularData, TabularSchema
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import profile_checks

SYNTHETIC_FILE = "synthetic.parquet"
PLAIN = "plain"  # profiles sampled from the copula and left as drawn


def nearest_distances(rows: np.ndarray, reference: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Euclidean distance of each row to its nearest reference row (``exclude_self``: ``rows`` is ``reference``
    and a row's distance to itself does not count)."""
    from sklearn.neighbors import NearestNeighbors

    if not len(rows):
        return np.zeros(0)
    index = NearestNeighbors(n_neighbors=2 if exclude_self else 1).fit(reference)
    distances, _ = index.kneighbors(rows)
    return distances[:, -1]


def plausible_ranges(seed: pd.DataFrame, numeric: list[str], scenarios) -> dict[str, tuple[float, float]]:
    """Per numeric column, the seed's range widened by what each scenario does to it (a debt spike may exceed
    the largest seed debt); a column that is never negative in the seed stays non-negative."""
    ranges = {}
    for column in numeric:
        values = pd.to_numeric(seed[column], errors="coerce").dropna()
        low, high = float(values.min()), float(values.max())
        bounds = [low, high]
        for scenario in scenarios:
            change = scenario.changes.get(column)
            if change:
                (operation, value), = change.items()
                if operation == "set":
                    bounds.append(float(value))
                else:
                    bounds += [x * value if operation == "scale" else x + value for x in (low, high)]
        ranges[column] = (max(0.0, min(bounds)) if low >= 0 else min(bounds), max(bounds))
    return ranges


def _check_scenarios(spec: Spec, schema: TabularSchema) -> None:
    columns = set(schema.inputs) | set(schema.sensitive)
    for scenario in spec.synthesis.profiles.scenarios:
        for column, change in scenario.changes.items():
            operation = next(iter(change))
            if column not in columns:
                raise SpecError(f"synthesis.profiles.scenarios `{scenario.name}` changes `{column}`, which is not "
                                "an input or sensitive column", "name a column of the data")
            if operation != "set" and column not in schema.numeric and column not in schema.bins:
                raise SpecError(f"scenario `{scenario.name}`: `{operation}` needs a numeric column; `{column}` is "
                                "categorical", f"use `set` for `{column}`")


def _sample(spec: Spec, data: TabularData) -> pd.DataFrame:
    profiles, schema, seed = spec.synthesis.profiles, data.schema, spec.runtime.seed
    columns = list(dict.fromkeys([*schema.inputs, *schema.sensitive]))
    numeric = [c for c in columns if c in schema.numeric or c in schema.bins]
    copula = GaussianCopula.fit(data.seed, numeric, [c for c in columns if c not in numeric], seed)
    parts = []
    counts = {s.name: int(round(profiles.rows * s.fraction)) for s in profiles.scenarios}
    plain = profiles.rows - sum(counts.values())
    if plain > 0:
        parts.append(copula.sample(plain, seed).assign(scenario=PLAIN))
    for k, scenario in enumerate(profiles.scenarios, start=1):
        if counts[scenario.name]:
            drawn = apply_scenario(copula.sample(counts[scenario.name], seed + k), scenario.changes)
            for column in numeric:  # a scaled whole number (months, counts) stays whole
                if copula.integral.get(column):
                    drawn[column] = np.round(pd.to_numeric(drawn[column]))
            parts.append(drawn.assign(scenario=scenario.name))
    return pd.concat(parts, ignore_index=True)[["scenario", *columns]]


def synthesize_profiles(spec: Spec, data: TabularData, teacher, out_dir: str, validation_dir: str | None) -> dict:
    """Run the tabular synthesis step (see the module docstring); returns ``synthesis.json``."""
    profiles, schema = spec.synthesis.profiles, data.schema
    _check_scenarios(spec, schema)
    drawn = _sample(spec, data)
    numeric = [c for c in drawn.columns if c in schema.numeric or c in schema.bins]
    ranges = plausible_ranges(data.seed, numeric, profiles.scenarios)
    inside = np.ones(len(drawn), dtype=bool)
    for column, (low, high) in ranges.items():
        values = pd.to_numeric(drawn[column], errors="coerce")
        inside &= (values.isna() | values.between(low, high)).to_numpy()
    x_seed = teacher.preprocessor.transform(data.seed)
    threshold = float(np.quantile(nearest_distances(x_seed, x_seed, exclude_self=True), profiles.privacy_quantile))
    distance = nearest_distances(teacher.preprocessor.transform(drawn), x_seed)
    private = distance >= threshold
    logits = teacher.logits(drawn)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    confident = probs.max(1) >= profiles.min_confidence
    keep = inside & private & confident
    reason = np.select([~inside, ~private, ~confident], ["implausible", "too_close_to_real", "low_confidence"], "")
    kept = drawn[keep].reset_index(drop=True).assign(
        label=[schema.labels[i] for i in probs[keep].argmax(1)], teacher_logits=list(logits[keep]))
    kept.insert(0, "row_id", [f"synthetic-{i:07d}" for i in range(len(kept))])
    categories = {c: sorted(set(data.seed[c].dropna().astype(str)) | _set_values(profiles.scenarios, c))
                  for c in schema.categorical if c in kept}
    integral = [c for c in numeric if np.all(np.isclose(pd.to_numeric(data.seed[c]).dropna() % 1, 0))]
    frame, checks = profile_checks(kept.assign(privacy_ok=distance[keep] >= threshold), ranges, integral,
                                   categories, schema.labels)
    result = run_suite("synthetic", frame, checks, validation_dir)
    require(result, "check synthesis.profiles (scenario changes outside the data's ranges?)")
    report = {"enabled": True, "generator": "copula", "generated": len(drawn), "kept": int(keep.sum()),
              "privacy_threshold": threshold, "privacy_quantile": profiles.privacy_quantile,
              "scenarios": _per_scenario(drawn, keep, reason, probs, schema),
              "great_expectations": {"suite": "synthetic", "expectations": result.evaluated, "rows": result.rows}}
    with atomic_dir(out_dir) as tmp:
        kept.to_parquet(tmp / SYNTHETIC_FILE, index=False)
        pd.DataFrame({"scenario": drawn["scenario"][~keep], "reason": reason[~keep]}).to_parquet(
            tmp / "dropped.parquet", index=False)
        write_json(tmp / "synthesis.json", report)
    say(f"synthesis: kept {report['kept']} of {report['generated']} profiles")
    return report


def _set_values(scenarios, column: str) -> set[str]:
    return {str(next(iter(s.changes[column].values()))) for s in scenarios if column in s.changes}


def _per_scenario(drawn: pd.DataFrame, keep: np.ndarray, reason: np.ndarray, probs: np.ndarray,
                  schema: TabularSchema) -> dict:
    positive = schema.labels.index(schema.positive) if schema.positive else None
    out = {}
    for name in dict.fromkeys(drawn["scenario"]):
        mine = (drawn["scenario"] == name).to_numpy()
        entry = {"generated": int(mine.sum()), "kept": int((mine & keep).sum()),
                 "dropped": {r: int((mine & (reason == r)).sum()) for r in
                             ("implausible", "too_close_to_real", "low_confidence")}}
        if positive is not None and (mine & keep).any():
            entry["positive_rate"] = float(np.mean(probs[mine & keep].argmax(1) == positive))
            entry["mean_positive_probability"] = float(np.mean(probs[mine & keep, positive]))
        out[name] = entry
    return out


def write_no_profiles(out_dir: str | Path) -> dict:
    """The synthesis folder of a tabular run without synthesis."""
    say("synthesis: off (no `synthesis` section in the spec)")
    with atomic_dir(out_dir) as tmp:
        pd.DataFrame(columns=["row_id", "scenario", "label", "teacher_logits"]).to_parquet(tmp / SYNTHETIC_FILE,
                                                                                           index=False)
        write_json(tmp / "synthesis.json", {"enabled": False})
    return {"enabled": False}


def load_profiles(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    folder = Path(folder)
    return pd.read_parquet(folder / SYNTHETIC_FILE), read_json(folder / "synthesis.json")
