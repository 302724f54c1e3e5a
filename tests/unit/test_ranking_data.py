"""BEIR-layout reading, its error messages, BM25 candidates and the query split."""

import json

import pytest

from stillhouse.tasks.reranking.data import bm25_candidates, read_beir, split_queries
from stillhouse.errors import DataError

CORPUS = [
    {"_id": "d1", "title": "Card fees", "text": "A foreign transaction fee applies to card payments abroad."},
    {"_id": "d2", "title": "", "text": "Mortgage rates rose for the third month in a row."},
    {"_id": "d3", "text": "Dividend stocks pay out part of their earnings to shareholders."},
]
QUERIES = [{"_id": "q1", "text": "card fee abroad"}, {"_id": "q2", "text": "why do stocks pay dividends"},
           {"_id": "q3", "text": "unjudged question about rates"}]


def write_beir(folder, corpus=CORPUS, queries=QUERIES, qrels="query-id\tcorpus-id\tscore\nq1\td1\t2\nq2\td3\t1\n",
               candidates=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (folder / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    (folder / "qrels.tsv").write_text(qrels)
    if candidates is not None:
        (folder / "candidates.tsv").write_text(candidates)
    paths = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels.tsv"]
    return paths + ([folder / "candidates.tsv"] if candidates is not None else [])


def test_reads_the_beir_layout_with_titles_grades_and_candidates_in_file_order(tmp_path):
    data = read_beir(*write_beir(tmp_path, candidates="q1\td2\nq1\td1\nq1\td2\nq2\td3\n"))
    assert data.corpus["d1"] == "Card fees. A foreign transaction fee applies to card payments abroad."
    assert data.corpus["d2"].startswith("Mortgage")  # empty title: text alone
    assert data.qrels == {"q1": {"d1": 2.0}, "q2": {"d3": 1.0}}
    assert data.candidates == {"q1": ["d2", "d1"], "q2": ["d3"]}  # rank order kept, the repeat dropped
    assert set(data.queries) == {"q1", "q2", "q3"}  # unjudged queries stay (unlabelled queries)
    assert data.subset(["q2"]).qrels == {"q2": {"d3": 1.0}}


def test_qrels_without_a_header_read_the_same(tmp_path):
    assert read_beir(*write_beir(tmp_path, qrels="q1\td1\t1\n")).qrels == {"q1": {"d1": 1.0}}


@pytest.mark.parametrize("change, message", [
    ({"qrels": "q1\td9\t1\n"}, "names 1 corpus id(s) that are not in the corpus file (e.g. 'd9')"),
    ({"qrels": "q7\td1\t1\n"}, "names 1 queries id(s) that are not in the queries file (e.g. 'q7')"),
    ({"qrels": "q1\td1\thigh\n"}, "score 'high' is not a number"),
    ({"qrels": "q1 d1 1\n"}, "1 column(s), needs 3"),
    ({"candidates": "q1\td5\n"}, "names 1 corpus id(s)"),
    ({"corpus": CORPUS + [CORPUS[0]]}, "id 'd1' appears twice"),
    ({"queries": [{"id": "q1", "text": "no _id"}]}, "line 1: not a JSON object with `_id` and `text`"),
    ({"queries": []}, "holds no records"),
])
def test_bad_files_name_the_problem_and_the_fix(tmp_path, change, message):
    with pytest.raises(DataError, match="fix:") as failure:
        read_beir(*write_beir(tmp_path, **change))
    assert message in str(failure.value)


def test_a_missing_file_is_named(tmp_path):
    paths = write_beir(tmp_path)
    paths[2].unlink()
    with pytest.raises(DataError, match="qrels file not found"):
        read_beir(*paths)


def test_bm25_ranks_the_passage_sharing_the_query_terms_first():
    corpus = {r["_id"]: r["text"] for r in CORPUS}
    ranked, scores = bm25_candidates(corpus, {"q1": "card fee abroad", "q2": "stocks dividends"}, k=5)
    assert ranked["q1"][0] == "d1" and ranked["q2"][0] == "d3"
    assert len(ranked["q1"]) == 3  # k is capped at the corpus size
    assert scores["q1"][0] > 0 and scores["q1"] == sorted(scores["q1"], reverse=True)


def test_query_split_is_deterministic_and_disjoint():
    ids = [f"q{i}" for i in range(20)]
    train, held_out = split_queries(ids, 5, seed=13)
    assert len(held_out) == 5 and not set(train) & set(held_out) and set(train) | set(held_out) == set(ids)
    assert split_queries(list(reversed(ids)), 5, seed=13) == (train, held_out)
    assert split_queries(ids, 5, seed=14)[1] != held_out
    with pytest.raises(DataError, match="cannot hold out 20 of 20"):
        split_queries(ids, 20, seed=13)


def test_embedding_distillation_without_stored_teacher_embeddings_names_the_file_and_the_fix(tmp_path):
    from stillhouse.errors import StillhouseError
    from stillhouse.tasks.reranking.task import TEACHER_EMBEDDINGS_FILE, _learn_teacher_embeddings

    with pytest.raises(StillhouseError, match=f"no teacher embeddings \\({TEACHER_EMBEDDINGS_FILE}\\)") as err:
        _learn_teacher_embeddings(None, None, tmp_path, None, None, None, str(tmp_path / "student"))
    assert "task.embedding_epochs" in str(err.value) and not (tmp_path / "student").exists()


def test_queries_that_cannot_be_ranked_are_dropped_and_counted_not_fatal():
    import pandas as pd

    from stillhouse.tasks.reranking.prepare import _drop_unrankable

    rows = [("s1", "d1", 1, 1.0), ("s1", "d2", 2, 0.0),          # a seed query to learn from
            ("s2", "d1", 1, 1.0),                                  # one candidate: nothing to rank
            ("s3", "d1", 1, 1.0), ("s3", "d2", 2, 1.0),          # both relevant: no pair to compare
            ("e1", "d1", 1, 0.0), ("e1", "d2", 2, 0.0),          # eval, first stage missed: kept (nDCG 0)
            ("e2", "d3", 1, 1.0),                                  # eval, one candidate
            ("p1", "d1", 1, -1.0), ("p1", "d3", 2, -1.0)]        # pool (unjudged)
    candidates = pd.DataFrame(rows, columns=["query_id", "passage_id", "first_stage_rank", "relevance"])
    report = {}
    kept, roles = _drop_unrankable(candidates, {"seed": ["s1", "s2", "s3"], "eval": ["e1", "e2"], "pool": ["p1"]},
                                   report)
    assert roles == {"seed": ["s1"], "eval": ["e1"], "pool": ["p1"]}
    assert set(kept["query_id"]) == {"s1", "e1", "p1"}
    assert report["dropped_queries"] == {
        "seed": {"fewer_than_2_candidates": 1, "all_candidates_judged_alike": 1},
        "eval": {"fewer_than_2_candidates": 1}, "pool": {"fewer_than_2_candidates": 0}}
    with pytest.raises(DataError, match="no seed query can be ranked"):
        _drop_unrankable(candidates, {"seed": ["s2", "s3"], "eval": ["e1"], "pool": []}, {})


def test_suite_examples_print_ids_not_numpy_reprs():
    import numpy as np

    from stillhouse.validate.runner import _short

    assert _short(np.str_("Q1551")) == "'Q1551'" and _short(np.int64(3)) == "3" and _short(0.123456) == "0.1235"


# d3 is ranked only by the held-out query; d4 by no query (left in: no held-out query's text)
@pytest.mark.parametrize("choice, passages", [("training", {"d1", "d2", "d4"}), ("corpus", {"d1", "d2", "d3", "d4"})])
def test_embedding_texts_leave_out_passages_only_held_out_queries_rank_unless_asked(tmp_path, choice, passages):
    import pandas as pd

    from stillhouse.tasks.reranking.prepare import PreparedRanking
    from stillhouse.tasks.reranking.task import embedding_texts
    from stillhouse.spec import parse_spec

    queries = pd.DataFrame({"query_id": ["s1", "p1", "e1"], "text": ["seed q", "pool q", "eval q"],
                            "split": ["seed", "pool", "eval"]})
    candidates = pd.DataFrame({"query_id": ["s1", "s1", "p1", "e1", "e1"], "passage_id": ["d1", "d2", "d2", "d2", "d3"],
                               "first_stage_rank": [1, 2, 1, 1, 2], "relevance": [1.0, 0.0, -1.0, 1.0, 0.0]})
    data = PreparedRanking(queries, candidates, pd.DataFrame({"passage_id": ["d1", "d2", "d3", "d4"],
                                                               "text": ["a", "b", "c", "d"]}),
                           pd.DataFrame(columns=["query_id", "passage_id", "grade"]), {})
    for name in ("corpus.jsonl", "queries.jsonl", "qrels.tsv"):
        (tmp_path / name).write_text("")
    spec = parse_spec(f"""
name: r
task: {{type: reranking, embedding_epochs: 1, embedding_texts: {choice}}}
data: {{corpus: corpus.jsonl, queries: queries.jsonl, qrels: qrels.tsv, eval_queries: 1}}
teacher: {{model: m}}
student: {{kind: pretrained, model: m}}
""", tmp_path)
    texts = embedding_texts(spec, data)
    assert set(texts.loc[texts["kind"] == "passage", "id"]) == passages
    assert set(texts.loc[texts["kind"] == "query", "id"]) == {"s1", "p1"}  # held-out queries never
