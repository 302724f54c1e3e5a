"""Re-ranking data in the BEIR layout: a corpus, queries, graded judgments (qrels) and each query's candidates.

Files (Thakur et al. 2021, BEIR)::

    corpus.jsonl    {"_id": ..., "title": ..., "text": ...}     one passage per line (title optional)
    queries.jsonl   {"_id": ..., "text": ...}                   one query per line
    qrels.tsv       query-id <TAB> corpus-id <TAB> score        graded judgments; header line optional
    candidates      query-id <TAB> corpus-id [<TAB> ...]        optional: a first stage's ranked candidates,
                                                                in rank order (e.g. a retriever's top-k)

Without a candidates file, candidates come from BM25 over the corpus (:func:`bm25_candidates`). Every id a
file names must exist where it points; a problem is one :class:`DataError` naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stillhouse.errors import DataError

# Anserini's BM25 defaults, which BEIR's BM25 baselines use (Lucene's k1 1.2 / b 0.75 score a little lower there).
BM25_K1, BM25_B = 0.9, 0.4


@dataclass
class RankingData:
    """Passages and queries by id, judgments (query → passage → grade) and candidates (query → ranked ids)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]
    candidates: dict[str, list[str]] = field(default_factory=dict)

    def subset(self, query_ids: list[str]) -> RankingData:
        """The same corpus with only ``query_ids`` (their queries, judgments and candidates)."""
        return RankingData(self.corpus, {q: self.queries[q] for q in query_ids},
                           {q: self.qrels[q] for q in query_ids if q in self.qrels},
                           {q: self.candidates[q] for q in query_ids if q in self.candidates})


def read_jsonl_records(path: Path, kind: str) -> dict[str, str]:
    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}", f"point to the {kind} file in the BEIR layout")
    records: dict[str, str] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key, text = str(record["_id"]), str(record["text"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{path}, line {number}: not a JSON object with `_id` and `text`",
                                'write one {"_id": ..., "text": ...} object per line (BEIR layout)') from None
            if key in records:
                raise DataError(f"{path}, line {number}: id {key!r} appears twice", f"give every {kind} a unique `_id`")
            title = str(record.get("title") or "").strip()
            records[key] = f"{title}. {text}" if title else text  # BEIR's cross-encoders read title and text as one
    if not records:
        raise DataError(f"{kind} file {path} holds no records", 'write one {"_id": ..., "text": ...} object per line')
    return records


def _tsv_rows(path: Path, kind: str, columns: int):
    """Rows of a TSV with at least ``columns`` columns; a first line whose last needed column is not a
    number, or which names `query-id`, is taken as the header."""
    if not path.is_file():
        raise DataError(f"{kind} file not found: {path}", f"point to the {kind} file (query-id, corpus-id, ...)")
    with open(path, encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle, delimiter="\t"), start=1):
            if not row or not "".join(row).strip():
                continue
            if number == 1 and (row[0].strip().lower() in ("query-id", "qid", "query_id")):
                continue
            if len(row) < columns:
                raise DataError(f"{path}, line {number}: {len(row)} column(s), needs {columns}",
                                f"write {kind} as tab-separated query-id, corpus-id{', score' if columns > 2 else ''}")
            yield number, [cell.strip() for cell in row]


def read_qrels(path: Path) -> dict[str, dict[str, float]]:
    qrels: dict[str, dict[str, float]] = {}
    for number, (query, doc, score, *_) in _tsv_rows(path, "qrels", 3):
        try:
            qrels.setdefault(query, {})[doc] = float(score)
        except ValueError:
            raise DataError(f"{path}, line {number}: score {score!r} is not a number",
                            "give each judgment a numeric grade (0 = not relevant, 1, 2, 3 = more relevant)") from None
    return qrels


def read_candidates(path: Path) -> dict[str, list[str]]:
    candidates: dict[str, list[str]] = {}
    for _, (query, doc, *_) in _tsv_rows(path, "candidates", 2):
        ranked = candidates.setdefault(query, [])
        if doc not in ranked:
            ranked.append(doc)
    return candidates


def _check_ids(named: dict[str, object], known: dict[str, str], what: str, where: Path, fix: str) -> None:
    missing = [key for key in named if key not in known]
    if missing:
        raise DataError(f"{where} names {len(missing)} {what} id(s) that are not in the {what} file "
                        f"(e.g. {', '.join(map(repr, missing[:3]))})", fix)


def read_beir(corpus: str | Path, queries: str | Path, qrels: str | Path,
              candidates: str | Path | None = None) -> RankingData:
    """Read the four files and check that every id they name exists; queries without judgments are kept
    (they can be unlabelled queries for distillation)."""
    data = RankingData(read_jsonl_records(Path(corpus), "corpus"), read_jsonl_records(Path(queries), "queries"),
                       read_qrels(Path(qrels)))
    _check_ids(data.qrels, data.queries, "queries", Path(qrels), "judge only queries in queries.jsonl")
    _check_ids({d: 1 for judged in data.qrels.values() for d in judged}, data.corpus, "corpus", Path(qrels),
               "judge only passages in corpus.jsonl")
    if candidates is not None:
        data.candidates = read_candidates(Path(candidates))
        _check_ids(data.candidates, data.queries, "queries", Path(candidates), "list candidates of known queries only")
        _check_ids({d: 1 for ranked in data.candidates.values() for d in ranked}, data.corpus, "corpus",
                   Path(candidates), "list only passages in corpus.jsonl")
    return data


def bm25_candidates(corpus: dict[str, str], queries: dict[str, str], k: int) -> tuple[dict[str, list[str]],
                                                                                       dict[str, list[float]]]:
    """Each query's top ``k`` passages by BM25 (bm25s; English stop words; k1 0.9, b 0.4) and their scores."""
    import bm25s

    doc_ids = list(corpus)
    k = min(k, len(doc_ids))
    retriever = bm25s.BM25(k1=BM25_K1, b=BM25_B)
    retriever.index(bm25s.tokenize(list(corpus.values()), stopwords="en", show_progress=False), show_progress=False)
    query_ids = list(queries)
    if not query_ids:
        return {}, {}
    indices, scores = retriever.retrieve(bm25s.tokenize(list(queries.values()), stopwords="en", show_progress=False),
                                         k=k, show_progress=False)
    ranked = {q: [doc_ids[i] for i in row] for q, row in zip(query_ids, np.asarray(indices))}
    return ranked, {q: [float(s) for s in row] for q, row in zip(query_ids, np.asarray(scores))}


def split_queries(query_ids: list[str], eval_size: int, seed: int) -> tuple[list[str], list[str]]:
    """A deterministic query-level split → (train ids, eval ids); no query's passages leak across it."""
    if not 0 < eval_size < len(query_ids):
        raise DataError(f"cannot hold out {eval_size} of {len(query_ids)} queries for evaluation",
                        "set the evaluation size between 1 and the number of queries minus 1")
    order = np.random.default_rng(seed).permutation(sorted(query_ids))
    held_out = set(order[:eval_size])
    return [q for q in sorted(query_ids) if q not in held_out], [q for q in sorted(query_ids) if q in held_out]
