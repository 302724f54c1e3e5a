"""Synthetic queries for re-ranking (InPars-style): write → clean and filter → hard negatives → teacher → keep.

1. Draw ``synthesis.queries.passages`` passages from the candidates' passages, never one judged relevant for an
   evaluation query (a query written for it would teach the student the test answer).
2. The generator writes one query per passage after ``shots`` real seed (query, relevant passage) pairs
   (Bonifacio et al. 2022, InPars; drawn afresh per prompt).
3. Filters drop, for the first reason that applies: wrong length, an exact duplicate, a near duplicate of another
   kept query, or too close to a real seed or evaluation query (``validation.synthetic.min_seed_distance``:
   copying a demonstration would leak real queries into training data).
4. Each query's candidates: its source passage and ``negatives`` BM25 hard negatives from the same passages.
5. The teacher scores every candidate. With ``require_source_first`` (default) a query is kept only if the
   teacher ranks its source passage above every hard negative (round-trip consistency, Dai et al. 2022,
   Promptagator); of the rest, the ``keep_fraction`` (of all scored queries) whose source passage it scores
   highest are kept (Jeronymo et al. 2023, InPars-v2: the re-ranker filters the generator).

Output folder: ``synthetic_queries.parquet`` (query_id, query, source_passage_id, passage_ids, passages,
teacher_scores, teacher, teacher_fingerprint), ``dropped.parquet`` (query, source_passage_id, reason) and
``synthesis.json`` (counts, speed, distances to real queries).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.io import atomic_dir, write_json
from stillhouse.progress import say
from stillhouse.spec import Spec
from stillhouse.synth.filters import exact_duplicate_mask, length_mask, seed_distance
from stillhouse.synth.generate import generate_prompted
from stillhouse.synth.similarity import greedy_near_duplicates, nearest_similarity
from stillhouse.tasks.reranking.data import bm25_candidates
from stillhouse.tasks.reranking.prepare import PreparedRanking
from stillhouse.tasks.reranking.teacher import load_ranking_teacher, score_groups
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import synthetic_query_checks

QUERIES_FILE = "synthetic_queries.parquet"


def query_prompt(instruction: str, demonstrations: list[tuple[str, str]], passage: str, max_chars: int) -> str:
    """Instruction, ``Document: …\\nQuestion: …`` demonstrations, then the passage, ending at ``Question:``."""
    def document(text: str) -> str:
        return " ".join(text.split())[:max_chars].rstrip()

    shots = "".join(f"Document: {document(p)}\nQuestion: {' '.join(q.split())}\n\n" for q, p in demonstrations)
    return f"{instruction}\n\n{shots}Document: {document(passage)}\nQuestion:"


def clean_query(text: str) -> str:
    """The generated query: its first non-empty line, without a ``Question:`` echo or wrapping quotes."""
    line = next((line for line in text.strip().splitlines() if line.strip()), "")
    line = line.strip()
    for prefix in ("question:", "query:"):
        if line.lower().startswith(prefix):
            line = line[len(prefix):].strip()
    return line.strip("\"'“” ").strip()


def _seed_pairs(data: PreparedRanking) -> list[tuple[str, str]]:
    text = dict(zip(data.passages["passage_id"], data.passages["text"]))
    seed = data.groups("seed")
    return [(q, text[pid]) for q, ids, grades in zip(seed["query"], seed["passage_ids"], seed["relevance"])
            for pid, grade in zip(ids, grades) if grade > 0]


def _drop_reasons(queries: list[str], real_queries: list[str], options, min_distance: float,
                  near_duplicate: float) -> np.ndarray:
    reasons = np.full(len(queries), "", dtype=object)
    reasons[~length_mask(queries, options.min_chars, options.max_chars)] = "length"
    reasons[(reasons == "") & exact_duplicate_mask(queries)] = "exact duplicate"
    # the similarity checks run on the queries still in, so an empty or repeated text cannot distort them
    alive = np.flatnonzero(reasons == "")
    texts = [queries[i] for i in alive]
    if len(texts) > 1:
        reasons[alive[greedy_near_duplicates(texts, near_duplicate)]] = "near duplicate"
    alive = np.flatnonzero(reasons == "")
    if len(alive) and real_queries:
        close = seed_distance([queries[i] for i in alive], real_queries) < min_distance
        reasons[alive[close]] = "too close to a real query"
    return reasons


def teacher_keep(scores: list[np.ndarray], keep_fraction: float, require_source_first: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Which synthetic queries the teacher keeps, and why each other one goes.

    ``scores[i]`` are the teacher's scores of query ``i``'s candidates, its source passage first. With
    ``require_source_first`` a query whose source passage the teacher ranks below one of its negatives is
    dropped (the query does not ask for its passage); then at most ``ceil(keep_fraction · len(scores))`` of the
    remaining queries are kept, highest source-passage score first. Returns (keep mask, reason per query).
    """
    source = np.array([s[0] for s in scores], dtype=np.float64)
    first = np.array([len(s) < 2 or s[0] > np.max(s[1:]) for s in scores], dtype=bool)
    reasons = np.full(len(scores), "", dtype=object)
    if require_source_first:
        reasons[~first] = "teacher ranks a negative above the source passage"
    eligible = np.flatnonzero(reasons == "")
    keep_count = int(np.ceil(keep_fraction * len(scores)))
    keep = np.zeros(len(scores), dtype=bool)
    keep[eligible[np.argsort(-source[eligible], kind="stable")[:keep_count]]] = True
    reasons[(reasons == "") & ~keep] = "teacher scores the source passage low"
    return keep, reasons


def synthesize_queries(spec: Spec, data_dir: str, teacher_dir: str, out_dir: str, validation_dir: str | None,
                       device: str = "cpu") -> dict:
    """Run the steps of the module docstring; returns the ``synthesis.json`` report."""
    options, seed_value = spec.synthesis.queries, spec.runtime.seed
    data = PreparedRanking.load(data_dir)
    rng = np.random.default_rng(seed_value)
    eval_relevant = {p for judged in data.judgments("eval").values() for p, g in judged.items() if g > 0}
    allowed = data.passages[~data.passages["passage_id"].isin(eval_relevant)].reset_index(drop=True)
    chosen = allowed.iloc[rng.permutation(len(allowed))[:options.passages]].reset_index(drop=True)
    pairs = _seed_pairs(data)
    prompts = []
    for passage in chosen["text"]:
        shots = [pairs[i] for i in rng.choice(len(pairs), size=min(options.shots, len(pairs)), replace=False)]
        prompts.append(query_prompt(options.instruction, shots, passage, options.max_passage_chars))
    started = time.perf_counter()
    written = [clean_query(t) for t in generate_prompted(spec.synthesis, prompts, seed_value, device)]
    seconds = time.perf_counter() - started
    real = data.queries.loc[data.queries["split"].isin(["seed", "eval"]), "text"].tolist()
    checks = spec.validation.synthetic
    reasons = _drop_reasons(written, real, options, checks.min_seed_distance, checks.max_near_duplicate_similarity)
    passing = np.flatnonzero(reasons == "")
    say(f"synthesis: {len(written)} queries in {seconds:.1f} s; {len(passing)} pass the filters")

    corpus = dict(zip(data.passages["passage_id"], data.passages["text"]))
    kept_queries = {f"synthetic-{i:07d}": written[i] for i in passing}
    negatives, _ = bm25_candidates(corpus, kept_queries, options.negatives + 1)
    groups = []
    for (query_id, query), i in zip(kept_queries.items(), passing):
        source = chosen.at[i, "passage_id"]
        ids = [source] + [p for p in negatives.get(query_id, []) if p != source][:options.negatives]
        groups.append({"query_id": query_id, "query": query, "source_passage_id": source, "passage_ids": ids,
                       "passages": [corpus[p] for p in ids]})
    frame = pd.DataFrame(groups, columns=["query_id", "query", "source_passage_id", "passage_ids", "passages"])
    teacher = load_ranking_teacher(teacher_dir, device)

    scores = score_groups(teacher, frame, desc=f"teacher: scoring {len(frame)} synthetic queries")
    frame = frame.assign(teacher_scores=[s.tolist() for s in scores], teacher=teacher.name,
                         teacher_fingerprint=teacher.fingerprint)
    keep, why = teacher_keep(scores, options.keep_fraction, options.require_source_first)
    reasons[passing[~keep]] = why[~keep]
    kept = frame[keep].reset_index(drop=True)
    distances = 1.0 - _nearest(kept["query"].tolist(), real)
    checked, suite = synthetic_query_checks(kept.assign(nearest_real_distance=distances), checks)
    result = run_suite("synthetic_queries", checked, suite, validation_dir)
    require(result, "adjust synthesis.queries (filters, keep_fraction) or the generator")
    dropped = pd.DataFrame({"query": written, "source_passage_id": chosen["passage_id"], "reason": reasons})
    report = {"enabled": True, "task": "reranking", "generator": spec.synthesis.generator, "generated": len(written),
              "seconds": round(seconds, 2), "queries_per_s": round(len(written) / seconds, 2) if seconds else None,
              "kept": len(kept), "dropped": {k: int(v) for k, v in pd.Series(reasons[reasons != ""]).value_counts()
                                             .items()},
              "teacher": teacher.name, "nearest_real_query_distance": {
                  f"p{q}": float(np.percentile(distances, q)) for q in (5, 50)} if len(kept) else {}}
    with atomic_dir(out_dir) as tmp:
        kept.to_parquet(tmp / QUERIES_FILE, index=False)
        dropped[dropped["reason"] != ""].to_parquet(tmp / "dropped.parquet", index=False)
        write_json(tmp / "synthesis.json", report)
    say(f"synthesis: kept {len(kept)} synthetic queries")
    return report


def _nearest(texts: list[str], references: list[str]) -> np.ndarray:
    if not texts or not references:
        return np.zeros(len(texts))
    return nearest_similarity(texts, references)[0]


def load_synthetic_queries(folder: str | Path) -> pd.DataFrame:
    """The kept synthetic queries (empty where synthesis was off or the folder is a classification one)."""
    path = Path(folder) / QUERIES_FILE
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()
