"""A packaged re-ranker behind a real `stillhouse serve` on 127.0.0.1: /rerank by text and by passage id, with
the same token, limits and audit log as /classify."""

import json

import pytest

from stillhouse.serve.local import start_serve, stop_process_group
from stillhouse.serve.tokens import hash_token
from tests.conftest import package_tiny_reranker

pytestmark = pytest.mark.integration

TOKEN = "rerank-e2e-token"
QUERY = "how do I dispute a card fee, mail me at jane.doe@bank.co.uk"


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("rerank-e2e")
    tag = package_tiny_reranker("tiny-reranker", tiny_model_dir)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "text": text}) + "\n" for i, text in
                                                 enumerate(["card fee disputes", "mortgage rates", "pension plans"])))
    process, client, _ = start_serve([tag, "--dir", str(folder / "serve"), "--passages", str(folder / "corpus.jsonl"),
                                      "--config", str(_limits(folder))], folder,
                                     env={"STILLHOUSE_TOKEN_HASHES": f"ci {hash_token(TOKEN)}"})
    yield {"client": client, "folder": folder, "tag": tag}
    stop_process_group(process)


def _limits(folder):
    (folder / "serve.yaml").write_text("limits: {max_passages: 3}\n")
    return folder / "serve.yaml"


def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def test_rerank_orders_passages_by_text_and_by_id(server):
    client = server["client"]
    by_text = client.post("/rerank", json={"query": QUERY, "passages": ["card fee disputes", "mortgage rates"]},
                          headers=auth())
    assert by_text.status_code == 200, by_text.text
    answer = by_text.json()
    assert sorted(r["id"] for r in answer["results"]) == ["0", "1"] and answer["model_tag"] == server["tag"]
    assert [r["rank"] for r in answer["results"]] == [1, 2]
    assert answer["results"][0]["score"] >= answer["results"][1]["score"]
    by_id = client.post("/rerank", json={"query": QUERY, "passage_ids": ["d2", "d0", "d1"], "top_k": 2},
                        headers=auth()).json()
    assert len(by_id["results"]) == 2 and {r["id"] for r in by_id["results"]} <= {"d0", "d1", "d2"}
    # the same passages score the same whether sent as text or cited by id
    scores = {r["id"]: r["score"] for r in client.post("/rerank", json={"query": QUERY, "passage_ids": ["d0", "d1"]},
                                                        headers=auth()).json()["results"]}
    assert scores["d0"] == pytest.approx({r["id"]: r["score"] for r in answer["results"]}["0"], abs=1e-4)


def test_rerank_is_guarded_like_classify(server):
    client = server["client"]
    assert client.post("/rerank", json={"query": "q", "passages": ["p"]}).status_code == 401
    too_many = client.post("/rerank", json={"query": "q", "passages": ["a", "b", "c", "d"]}, headers=auth())
    assert too_many.status_code == 422 and "the limit is 3" in too_many.json()["error"]
    unknown = client.post("/rerank", json={"query": "q", "passage_ids": ["d9"]}, headers=auth())
    assert unknown.status_code == 422 and "not in the passage store" in unknown.json()["error"]
    # a re-ranker's service has no /classify: the route is another task's (it was a 422 before each task had
    # its own service)
    classify = client.post("/classify", json={"texts": ["hi"]}, headers=auth())
    assert classify.status_code == 404


def test_audit_lines_carry_the_ranking_but_no_query_text_or_pii(server):
    client = server["client"]
    client.post("/rerank", json={"query": QUERY, "passage_ids": ["d1", "d0"]}, headers=auth())
    log = (server["folder"] / "serve" / "audit.jsonl").read_text()
    lines = [json.loads(line) for line in log.splitlines()]
    ranked = [line for line in lines if line["endpoint"] == "/rerank" and line["status"] == 200]
    assert ranked and sorted(ranked[-1]["output_summary"]["ranked_positions"]) == [0, 1]
    assert '"d0"' not in json.dumps(ranked[-1])  # ids are the caller's words: positions only
    assert "jane.doe@bank.co.uk" not in log and "dispute a card fee" not in log and TOKEN not in log
