"""Turn a BEIR-layout re-ranking set into the prepared seed / pool / eval queries every later step reads.

Output folder (:class:`PreparedRanking`)::

    queries.parquet      query_id, text, split (seed | pool | eval)
    candidates.parquet   query_id, passage_id, first_stage_rank (1 = first), relevance (grade; -1 = not read)
    passages.parquet     passage_id, text (the candidates' passages only)
    qrels.parquet        query_id, passage_id, grade: every judgment of the seed and eval queries (the ideal
                         ranking of nDCG counts relevant passages the first stage missed)
    validation.json      counts, first stage, candidate recall, fingerprints, the GE suite's summary

The split is by query, so no query's passages cross it. Pool queries are training queries whose judgments are
never read (``relevance`` -1): the teacher's scores are all the student learns from them. A seed query whose
relevant passage the first stage missed gets it appended (the teacher needs a positive to learn from); eval
queries keep the first stage's candidates as they are, so the evaluation measures re-ranking, not recall.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.fingerprint import rows_fingerprint
from stillhouse.data.io import atomic_dir, read_json, write_json
from stillhouse.errors import DataError
from stillhouse.spec import Spec
from stillhouse.tasks.reranking.data import RankingData, bm25_candidates, read_beir, split_queries
from stillhouse.tasks.reranking.metrics import recall_at_k
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import ranking_seed_checks


@dataclass(frozen=True)
class PreparedRanking:
    """The prepared re-ranking sets, as written by :func:`prepare_ranking`."""

    queries: pd.DataFrame
    candidates: pd.DataFrame
    passages: pd.DataFrame
    qrels: pd.DataFrame
    report: dict

    @classmethod
    def load(cls, folder: str | Path) -> PreparedRanking:
        folder = Path(folder)
        return cls(*(pd.read_parquet(folder / f"{name}.parquet") for name in ("queries", "candidates", "passages",
                                                                                "qrels")),
                   report=read_json(folder / "validation.json"))

    def groups(self, split: str) -> pd.DataFrame:
        """One row per query of ``split``: query_id, query, passage_ids, passages, relevance (lists, in
        first-stage order)."""
        queries = self.queries[self.queries["split"] == split]
        text = dict(zip(self.passages["passage_id"], self.passages["text"]))
        candidates = self.candidates[self.candidates["query_id"].isin(set(queries["query_id"]))]
        by_query = {q: frame.sort_values("first_stage_rank") for q, frame in candidates.groupby("query_id")}
        rows = []
        for query_id, query in zip(queries["query_id"], queries["text"]):
            frame = by_query.get(query_id)
            if frame is None:
                continue
            ids = frame["passage_id"].tolist()
            rows.append({"query_id": query_id, "query": query, "passage_ids": ids,
                         "passages": [text[p] for p in ids], "relevance": frame["relevance"].astype(float).tolist()})
        return pd.DataFrame(rows, columns=["query_id", "query", "passage_ids", "passages", "relevance"])

    def judgments(self, split: str) -> dict[str, dict[str, float]]:
        """query → passage → grade for the queries of ``split`` (seed or eval)."""
        ids = set(self.queries.loc[self.queries["split"] == split, "query_id"])
        frame = self.qrels[self.qrels["query_id"].isin(ids)]
        out: dict[str, dict[str, float]] = {}
        for query, passage, grade in frame[["query_id", "passage_id", "grade"]].itertuples(index=False):
            out.setdefault(query, {})[passage] = float(grade)
        return out


def _split_roles(spec: Spec, data: RankingData, report: dict) -> dict[str, list[str]]:
    ranking = spec.data
    judged = sorted(q for q, grades in data.qrels.items() if any(g > 0 for g in grades.values()))
    train, held_out = split_queries(judged, ranking.eval_queries, spec.runtime.seed)
    rng = np.random.default_rng(spec.runtime.seed + 1)
    train = [str(q) for q in rng.permutation(train)]  # ids as str, not np.str_ (they end up in reports)
    seed_count = ranking.seed_queries or len(train)
    if seed_count > len(train):
        raise DataError(f"data.seed_queries={seed_count} but only {len(train)} judged queries remain after holding "
                        f"out {ranking.eval_queries} for evaluation", "lower data.seed_queries or data.eval_queries")
    seed, rest = sorted(train[:seed_count]), train[seed_count:]
    unjudged = sorted(q for q in data.queries if q not in set(judged))
    pool = sorted(rest + unjudged)
    if ranking.max_pool_queries and len(pool) > ranking.max_pool_queries:
        pool = sorted(rng.choice(pool, ranking.max_pool_queries, replace=False).tolist())
    report["queries"] = {"judged": len(judged), "unjudged": len(unjudged), "judged_used_as_pool": len(rest)}
    return {"seed": seed, "pool": pool, "eval": held_out}


def _candidates(spec: Spec, data: RankingData, roles: dict[str, list[str]], report: dict) -> pd.DataFrame:
    wanted = {q: data.queries[q] for ids in roles.values() for q in ids}
    if data.candidates:
        missing = [q for q in wanted if q not in data.candidates]
        if missing:
            raise DataError(f"{spec.data.candidates} has no candidates for {len(missing)} queries "
                            f"(e.g. {', '.join(map(repr, missing[:3]))})",
                            "list candidates for every query, or leave data.candidates out to use BM25")
        ranked = {q: data.candidates[q] for q in wanted}
        report["first_stage"] = f"candidates file {spec.data.candidates}"
    else:
        ranked, _ = bm25_candidates(data.corpus, wanted, spec.data.candidates_k)
        report["first_stage"] = f"BM25 top {spec.data.candidates_k} (bm25s, k1 0.9, b 0.4)"
    rows, appended = [], 0
    for role, ids in roles.items():
        for query in ids:
            passages = list(ranked[query])
            grades = data.qrels.get(query, {})
            if role == "seed":
                extra = [p for p, g in grades.items() if g > 0 and p not in passages]
                appended += len(extra)
                passages += extra
            for rank, passage in enumerate(passages, start=1):
                relevance = grades.get(passage, 0.0) if role != "pool" else -1.0
                rows.append((query, passage, rank, float(relevance)))
    report["seed_positives_appended"] = appended
    return pd.DataFrame(rows, columns=["query_id", "passage_id", "first_stage_rank", "relevance"])


def _drop_unrankable(candidates: pd.DataFrame, roles: dict[str, list[str]],
                     report: dict) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Drop the queries that cannot be ranked, and count them (``report["dropped_queries"]``): fewer than 2
    candidates (nothing to rank), or, for seed queries, every candidate judged alike (no pair for the teacher to
    learn from). Real judgment files have such queries; they are dropped like duplicate rows are, not a reason to
    stop the run. Evaluation queries whose candidates are all judged alike (the first stage found no relevant
    passage) stay: their nDCG of 0 is part of the end-to-end figure, the same for every model compared."""
    per_query = candidates.groupby("query_id")
    size = per_query["passage_id"].transform("size")
    grades = per_query["relevance"].transform("nunique")
    judged = candidates["query_id"].isin(set(roles["seed"]))
    few = size < 2
    alike = judged & ~few & (grades < 2)
    dropped = {}
    kept_roles = {}
    for role, ids in roles.items():
        in_role = candidates["query_id"].isin(set(ids))
        counts = {"fewer_than_2_candidates": int(candidates.loc[in_role & few, "query_id"].nunique())}
        if role == "seed":
            counts["all_candidates_judged_alike"] = int(candidates.loc[in_role & alike, "query_id"].nunique())
        gone = set(candidates.loc[in_role & (few | alike), "query_id"])
        kept_roles[role] = [q for q in ids if q not in gone and q in set(candidates.loc[in_role, "query_id"])]
        dropped[role] = counts
    report["dropped_queries"] = dropped
    kept = candidates[~(few | alike)].reset_index(drop=True)
    if not kept_roles["seed"] or not kept_roles["eval"]:
        role = "seed" if not kept_roles["seed"] else "eval"
        raise DataError(f"no {role} query can be ranked: every one has fewer than 2 candidates or all its "
                        f"candidates judged alike ({dropped[role]})",
                        "add candidates (data.candidates or a larger data.candidates_k) or judgments with "
                        "different grades")
    return kept, kept_roles


def validate_ranking_seed(frame: pd.DataFrame, validation_dir: str | Path | None) -> dict:
    """The Great Expectations re-ranking seed suite over the seed queries' candidate rows."""
    checked, checks = ranking_seed_checks(frame)
    result = run_suite("ranking_seed", checked, checks, validation_dir)
    require(result, "correct the corpus, queries or qrels files")
    return {"suite": "ranking_seed", "expectations": result.evaluated, "rows": result.rows}


def prepare_ranking(spec: Spec, out_dir: str | Path, validation_dir: str | Path | None = None) -> PreparedRanking:
    """Read, split by query, gather candidates, validate (GE) and write the prepared re-ranking sets."""
    d = spec.data
    data = read_beir(d.corpus, d.queries, d.qrels, d.candidates)
    report: dict = {"sources": {"corpus": d.corpus, "queries": d.queries, "qrels": d.qrels,
                                "candidates": d.candidates}}
    roles = _split_roles(spec, data, report)
    candidates = _candidates(spec, data, roles, report)
    candidates, roles = _drop_unrankable(candidates, roles, report)
    split_of = {q: role for role, ids in roles.items() for q in ids}
    queries = pd.DataFrame({"query_id": list(split_of), "text": [data.queries[q] for q in split_of],
                            "split": list(split_of.values())})
    used = sorted(set(candidates["passage_id"]))
    passages = pd.DataFrame({"passage_id": used, "text": [data.corpus[p] for p in used]})
    judged = [q for q in roles["seed"] + roles["eval"]]
    qrels = pd.DataFrame([(q, p, g) for q in judged for p, g in data.qrels.get(q, {}).items()],
                         columns=["query_id", "passage_id", "grade"])
    prepared = PreparedRanking(queries, candidates, passages, qrels, report)
    seed_rows = candidates[candidates["query_id"].isin(set(roles["seed"]))].merge(queries, on="query_id").merge(
        passages.rename(columns={"text": "passage"}), on="passage_id")
    report["great_expectations"] = [validate_ranking_seed(seed_rows, validation_dir)]
    eval_groups = prepared.groups("eval")
    eval_qrels = prepared.judgments("eval")
    report["counts"] = {role: len(ids) for role, ids in roles.items()} | {
        "candidates": len(candidates), "passages": len(passages)}
    report["eval_first_stage_recall"] = float(np.mean([recall_at_k(ids, eval_qrels[q], len(ids)) for q, ids in
                                                       zip(eval_groups["query_id"], eval_groups["passage_ids"])]))
    report["fingerprints"] = {role: rows_fingerprint(queries.loc[queries["split"] == role, "text"])
                              for role in roles}
    with atomic_dir(out_dir) as tmp:
        for name in ("queries", "candidates", "passages", "qrels"):
            getattr(prepared, name).to_parquet(tmp / f"{name}.parquet", index=False)
        write_json(tmp / "validation.json", report)
    return prepared
