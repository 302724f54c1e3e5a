"""Turn the spec's data sources into the three prepared sets every later step reads.

Output folder (``PreparedData``): ``seed.parquet`` (row_id, text, label), ``pool.parquet`` (row_id, text),
``eval.parquet`` (row_id, text, label), ``labels.json`` and ``validation.json`` (counts, fingerprints, what was
dropped and why). Row ids (``seed-0000012``) join soft labels back to their input row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.fingerprint import rows_fingerprint
from stillhouse.data.io import atomic_dir, describe_source, read_json, read_source, write_json
from stillhouse.errors import DataError
from stillhouse.spec import Spec
from stillhouse.validate.checks import check_labelled, check_pool, drop_duplicates
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import seed_checks


@dataclass(frozen=True)
class PreparedData:
    """The prepared seed / pool / eval sets, as written by :func:`prepare_data`."""

    seed: pd.DataFrame
    pool: pd.DataFrame
    eval: pd.DataFrame
    labels: list[str]
    report: dict

    @classmethod
    def load(cls, folder: str | Path) -> PreparedData:
        folder = Path(folder)
        return cls(
            seed=pd.read_parquet(folder / "seed.parquet"),
            pool=pd.read_parquet(folder / "pool.parquet"),
            eval=pd.read_parquet(folder / "eval.parquet"),
            labels=read_json(folder / "labels.json"),
            report=read_json(folder / "validation.json"),
        )


def _stratified_holdout(frame: pd.DataFrame, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of ``size`` rows spread over labels in proportion to their frequency."""
    if size >= len(frame):
        raise DataError(f"sampling.eval_size={size} leaves no rows for training (the seed file has {len(frame)})",
                        "lower sampling.eval_size")
    mask = np.zeros(len(frame), dtype=bool)
    positions = np.arange(len(frame))
    for _, group in frame.groupby("label", sort=True).indices.items():
        take = int(round(size * len(group) / len(frame)))
        mask[rng.choice(group, size=min(take, len(group)), replace=False)] = True
    missing = size - int(mask.sum())
    if missing > 0:
        mask[rng.choice(positions[~mask], size=missing, replace=False)] = True
    elif missing < 0:
        mask[rng.choice(positions[mask], size=-missing, replace=False)] = False
    return mask


def _per_label_sample(frame: pd.DataFrame, per_label: int, rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros(len(frame), dtype=bool)
    for _, group in frame.groupby("label", sort=True).indices.items():
        mask[rng.choice(group, size=min(per_label, len(group)), replace=False)] = True
    return mask


def _with_ids(frame: pd.DataFrame, role: str, with_label: bool) -> pd.DataFrame:
    columns = ["row_id", "text", "label"] if with_label else ["row_id", "text"]
    out = frame.reset_index(drop=True)
    out = out.assign(row_id=[f"{role}-{i:07d}" for i in range(len(out))])
    return out[columns]


def split_sampling(spec: Spec, seed_frame: pd.DataFrame, report: dict) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """Apply ``data.sampling`` to labelled rows (a ``label`` column): returns (seed, rest-as-pool, held-out eval or
    None). Every task whose data is labelled rows samples this way."""
    rng = np.random.default_rng(spec.runtime.seed)
    sampling = spec.data.sampling
    eval_frame = None
    rest = seed_frame.iloc[0:0]
    if sampling and sampling.eval_size:
        mask = _stratified_holdout(seed_frame, sampling.eval_size, rng)
        eval_frame, seed_frame = seed_frame[mask], seed_frame[~mask]
    if sampling and sampling.seed_per_label:
        mask = _per_label_sample(seed_frame, sampling.seed_per_label, rng)
        seed_frame, rest = seed_frame[mask], seed_frame[~mask]
        report["rest_of_seed_file_used_as_pool"] = len(rest)
    return seed_frame, rest, eval_frame


def cap_pool(spec: Spec, pool: pd.DataFrame) -> pd.DataFrame:
    cap = spec.data.sampling.pool_size if spec.data.sampling else None
    if cap and len(pool) > cap:
        return pool.sample(n=cap, random_state=spec.runtime.seed)
    return pool


def _prepare_frames(spec: Spec) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str], dict]:
    task = spec.task
    report: dict = {"sources": {}, "dropped": {}}
    raw_seed = read_source(spec.data.seed)
    report["sources"]["seed"] = describe_source(spec.data.seed)
    seed, labels = check_labelled(raw_seed, task, "seed", describe_source(spec.data.seed), task.labels)
    seed, rest, held_out = split_sampling(spec, seed, report)
    if spec.data.feedback is not None:  # corrections from serving join the seed whole, after sampling
        report["sources"]["feedback"] = describe_source(spec.data.feedback)
        corrections, _ = check_labelled(read_source(spec.data.feedback), task, "feedback",
                                        describe_source(spec.data.feedback), labels)
        seed = pd.concat([seed[~seed["text"].isin(set(corrections["text"]))], corrections[["text", "label"]]])
        report["feedback_rows"] = len(corrections)

    if spec.data.eval is not None:
        report["sources"]["eval"] = describe_source(spec.data.eval)
        eval_frame, _ = check_labelled(read_source(spec.data.eval), task, "eval",
                                       describe_source(spec.data.eval), labels)
    else:
        eval_frame = held_out
    pool = rest[["text"]]
    if spec.data.pool is not None:
        report["sources"]["pool"] = describe_source(spec.data.pool)
        pool = pd.concat([pool, check_pool(read_source(spec.data.pool), task, describe_source(spec.data.pool))])

    seed, report["dropped"]["seed_duplicates"] = drop_duplicates(seed, "seed")
    eval_frame, report["dropped"]["eval_duplicates"] = drop_duplicates(eval_frame, "eval")
    pool = pool.drop_duplicates(subset="text")
    # Rows that are also evaluation or seed rows must not reach the student as "unlabelled" data:
    # an evaluation row in the pool leaks the test set into training.
    known = set(eval_frame["text"]) | set(seed["text"])
    in_known = pool["text"].isin(known)
    report["dropped"]["pool_rows_in_seed_or_eval"] = int(in_known.sum())
    pool = cap_pool(spec, pool[~in_known])
    leak = seed["text"].isin(set(eval_frame["text"]))
    report["dropped"]["seed_rows_in_eval"] = int(leak.sum())
    seed = seed[~leak]

    missing = [label for label in labels if label not in set(seed["label"])]
    if missing:
        raise DataError(f"labels with no seed examples: {', '.join(missing[:10])}",
                        "add seed rows for every label, or remove these labels from task.labels")
    return seed, pool, eval_frame, labels, report


def validate_seed(spec: Spec, seed: pd.DataFrame, labels: list[str], validation_dir: str | Path | None) -> dict:
    """Run the Great Expectations seed suite; raise :class:`ValidationFailed` (nothing written) if it fails."""
    frame, checks = seed_checks(seed, labels, spec.validation.seed)
    result = run_suite("seed", frame, checks, validation_dir)
    require(result, "correct the seed file, or relax validation.seed in the spec if the data is right")
    return {"suite": "seed", "expectations": result.evaluated, "rows": result.rows}


def prepare_data(spec: Spec, out_dir: str | Path, validation_dir: str | Path | None = None) -> PreparedData:
    """Read, check, sample, validate (GE seed suite) and write the prepared sets to ``out_dir`` (atomically).

    ``validation_dir`` receives the suite's results and Data Docs, whether it passes or fails.
    """
    seed, pool, eval_frame, labels, report = _prepare_frames(spec)
    seed, pool = _with_ids(seed, "seed", True), _with_ids(pool, "pool", False)
    eval_frame = _with_ids(eval_frame, "eval", True)
    report["great_expectations"] = [validate_seed(spec, seed, labels, validation_dir)]
    report["counts"] = {"seed": len(seed), "pool": len(pool), "eval": len(eval_frame), "labels": len(labels)}
    report["seed_per_label"] = {k: int(v) for k, v in seed["label"].value_counts().sort_index().items()}
    report["fingerprints"] = {
        "seed": rows_fingerprint(seed["text"], seed["label"]),
        "pool": rows_fingerprint(pool["text"]),
        "eval": rows_fingerprint(eval_frame["text"], eval_frame["label"]),
    }
    with atomic_dir(out_dir) as tmp:
        seed.to_parquet(tmp / "seed.parquet", index=False)
        pool.to_parquet(tmp / "pool.parquet", index=False)
        eval_frame.to_parquet(tmp / "eval.parquet", index=False)
        write_json(tmp / "labels.json", labels)
        write_json(tmp / "validation.json", report)
    return PreparedData(seed=seed, pool=pool, eval=eval_frame, labels=labels, report=report)
