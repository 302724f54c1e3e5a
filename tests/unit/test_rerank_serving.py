"""/rerank's request checks, passage store, ranking and audit summary (pure, no server)."""

import json

import pytest

from stillhouse.errors import RequestError, ServeConfigError
from stillhouse.serve.audit import output_summary
from stillhouse.serve.config import LimitsConfig
from stillhouse.tasks.reranking.requests import PassageStore, rank_passages
from stillhouse.tasks.reranking.requests import check_rerank

LIMITS = LimitsConfig(max_passages=3, max_text_chars=50)


def body(**payload) -> bytes:
    return json.dumps(payload).encode()


def test_valid_requests_return_the_query_and_passage_texts():
    assert check_rerank(body(query="q", passages=["a", {"id": "x", "text": "b"}]), LIMITS).texts == ["q", "a", "b"]
    assert check_rerank(body(query="q", passage_ids=["d1", "d2"], top_k=1), LIMITS).texts == ["q"]


@pytest.mark.parametrize("payload, message", [
    ({"passages": ["a"]}, "`query` is not a string"),
    ({"query": "q"}, "exactly one of `passages` and `passage_ids`"),
    ({"query": "q", "passages": ["a"], "passage_ids": ["d"]}, "exactly one of"),
    ({"query": "q", "passages": []}, "`passages` is empty or not a list"),
    ({"query": "q", "passages": ["a", "b", "c", "d"]}, "4 passages in one request; the limit is 3"),
    ({"query": "q", "passages": ["a", " "]}, "passages[1] is empty"),
    ({"query": "q", "passages": ["x" * 51]}, "passages[0] has 51 characters; the limit is 50"),
    ({"query": "q", "passages": [{"text": "no id"}]}, "passages[0] is not {\"id\": string"),
    ({"query": "q", "passage_ids": [7]}, "passage_ids[0] is not a non-empty string"),
    ({"query": "q", "passages": ["a"], "top_k": 0}, "`top_k` is not a positive integer"),
    ({"query": "q", "passages": ["a"], "k": 1}, "1 unknown field(s)"),
])
def test_bad_requests_name_the_field_and_the_fix(payload, message):
    with pytest.raises(RequestError) as failure:
        check_rerank(body(**payload), LIMITS)
    assert message in failure.value.problem and failure.value.fix


def test_passage_store_looks_up_ids_and_refuses_unknown_ones(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "d1", "title": "Fees", "text": "card fee"}\n{"_id": "d2", "text": "loan"}\n')
    store = PassageStore(corpus)
    assert store.candidates(None, ["d2", "d1"]) == (["d2", "d1"], ["loan", "Fees. card fee"])
    with pytest.raises(RequestError, match="1 passage id"):
        store.candidates(None, ["d1", "d9"])
    assert PassageStore(None).candidates(["a", {"id": "z", "text": "b"}], None) == (["0", "z"], ["a", "b"])
    with pytest.raises(ServeConfigError, match="serving config `passages`: passages file not found"):
        PassageStore(tmp_path / "missing.jsonl")


def test_ranking_is_by_score_with_ties_in_sent_order_and_top_k():
    ranked = rank_passages(["a", "b", "c"], [0.5, 2.0, 0.5])
    assert [(r["id"], r["rank"]) for r in ranked] == [("b", 1), ("a", 2), ("c", 3)]
    assert [r["id"] for r in rank_passages(["a", "b", "c"], [0.5, 2.0, 0.5], top_k=2)] == ["b", "a"]


def test_audit_keeps_a_ranking_as_candidate_positions_and_top_score_not_ids_or_texts():
    payload = {"results": [{"id": "jane@bank.com", "score": 1.23456, "rank": 1}, {"id": "d2", "score": 0.1,
                                                                                  "rank": 2}],
               "model_tag": "r:1", "model_version": "1"}
    request = {"query": "q", "passages": [{"id": "d2", "text": "a"}, {"id": "jane@bank.com", "text": "b"}]}
    summary = output_summary(payload, request)
    assert summary == {"ranked_positions": [1, 0], "top_score": 1.2346}
    assert output_summary(payload, {"query": "q", "passage_ids": ["d2", "x"]})["ranked_positions"] == [None, 0]
    assert "jane@bank.com" not in json.dumps(summary)  # ids are the caller's: never in the audit
