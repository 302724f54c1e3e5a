"""The student services' methods with a stub model (no HTTP, no model store): readiness, answers, feedback; each
task's service has exactly its own route."""

import asyncio
import importlib
import json
import types

import pytest


class StubModel:
    """Stands in for the StudentModel dependency: labels by the word 'bad', counts its calls."""

    def __init__(self, fail_describe: int = 0):
        self.calls, self.fail_describe = [], fail_describe
        self.to_async = self

    async def describe(self):
        if self.fail_describe:
            self.fail_describe -= 1
            raise ConnectionError("model service not up yet")
        return {"tag": "stub:v1", "version": "v1", "labels": ["bad", "good"], "task": "classification"}

    async def predict(self, texts):
        self.calls.append(list(texts))
        return [{"label": "bad" if "bad" in t else "good", "confidence": 0.9,
                 "probabilities": {"bad": 0.9, "good": 0.1} if "bad" in t else {"bad": 0.1, "good": 0.9}}
                for t in texts]


SERVICES = {"classification": ("classification_service", "Classifier", "/classify"),
            "reranking": ("reranking_service", "Reranker", "/rerank"),
            "tabular": ("tabular_service", "TabularScorer", "/score")}


def front(tmp_path, monkeypatch, task: str):
    """The public service class of ``task`` (its BentoML inner class), configured for a stub model."""
    (tmp_path / "serve.yaml").write_text(json.dumps({
        "model": "stub:v1", "auth": {"enabled": False}, "feedback": {"path": str(tmp_path / "fb.sqlite")},
        "audit": {"path": str(tmp_path / "audit.jsonl")}}))
    monkeypatch.setenv("STILLHOUSE_SERVE_CONFIG", str(tmp_path / "serve.yaml"))
    module_name, name, _ = SERVICES[task]
    module = importlib.reload(importlib.import_module(f"stillhouse.serving.{module_name}"))
    return getattr(module, name)


@pytest.fixture()
def student(tmp_path, monkeypatch):
    service = front(tmp_path, monkeypatch, "classification").inner()
    service.model = StubModel(fail_describe=1)
    return service


@pytest.fixture()
def ranker(tmp_path, monkeypatch):
    service = front(tmp_path, monkeypatch, "reranking").inner()
    service.model = StubReranker()
    return service


@pytest.mark.parametrize("task", sorted(SERVICES))
def test_each_task_s_service_answers_its_own_route_and_feedback_only(tmp_path, monkeypatch, task):
    from stillhouse.tasks import task_for

    from stillhouse.serve.schemas import check_feedback

    serving = task_for(task).serving
    service = front(tmp_path, monkeypatch, task)
    routes = {api.route: api for api in service.apis.values()}
    assert set(routes) == {SERVICES[task][2], "/feedback"} == {serving.route, "/feedback"}
    module, name = serving.service.split(":")
    assert module == f"stillhouse.serving.{SERVICES[task][0]}" and name == SERVICES[task][1]
    # the service is the task's declared contract: its route's check before the service, its response schema
    assert routes[serving.route].func.__annotations__["return"] in (serving.response, serving.response.__name__)
    [(middleware, options)] = service.middlewares
    assert options["checks"] == {serving.route: serving.check, "/feedback": check_feedback}


def context(request_id="r-1", principal="alice"):
    request = types.SimpleNamespace(headers={"x-request-id": request_id, "x-stillhouse-principal": principal})
    return types.SimpleNamespace(request=request, response=types.SimpleNamespace(status_code=200, headers={}))


def test_ready_only_once_the_model_answers(student):
    assert asyncio.run(student.__is_ready__()) is False
    assert asyncio.run(student.__is_ready__()) is True


def test_classify_answers_in_order_with_the_model_tag_and_remembers_the_request(student):
    student.model.fail_describe = 0
    answer = asyncio.run(student.classify.func(student, ["a bad day", "fine"], context()))
    assert [r.label for r in answer.results] == ["bad", "good"]
    assert (answer.model_tag, answer.model_version) == ("stub:v1", "v1") and student.model.calls == [
        ["a bad day", "fine"]]
    stored = asyncio.run(student.feedback.func(student, "good", context(), request_id="r-1", index=0))
    assert stored.feedback_id == 1 and stored.model_tag == "stub:v1"
    # another principal cannot cite alice's request id
    other = asyncio.run(student.feedback.func(student, "good", context(principal="bob"), request_id="r-1"))
    assert other.status_code == 422 and b"unknown request_id" in other.body


def test_feedback_refuses_unknown_labels_and_chain_steps_with_422(student):
    student.model.fail_describe = 0
    ctx = context()
    wrong = asyncio.run(student.feedback.func(student, "neutral", ctx, text="x"))
    assert wrong.status_code == 422 and ctx.response.status_code == 422
    assert b"not one of the model's 2 labels" in wrong.body
    step = asyncio.run(student.feedback.func(student, "good", context(), text="x", step="intent"))
    assert step.status_code == 422 and b"for chains" in step.body


def test_with_the_feedback_database_down_classify_still_answers_and_feedback_is_503(student, monkeypatch, caplog):
    from stillhouse.errors import Unavailable

    def down(*args, **kwargs):
        raise Unavailable("the feedback database cannot be reached", "retry later")

    student.model.fail_describe = 0
    monkeypatch.setattr(student.feedback_store, "remember_request", down)
    monkeypatch.setattr(student.feedback_store, "add", down)
    answer = asyncio.run(student.classify.func(student, ["a bad day"], context()))
    assert [r.label for r in answer.results] == ["bad"]
    assert "not kept for feedback" in caplog.text and "a bad day" not in caplog.text
    ctx = context()
    refused = asyncio.run(student.feedback.func(student, "good", ctx, text="a bad day"))
    assert refused.status_code == 503 and ctx.response.status_code == 503
    assert refused.headers["retry-after"] == "5" and b"cannot be reached" in refused.body
    assert b"a bad day" not in refused.body


class StubReranker(StubModel):
    """A re-ranker stand-in: a passage scores the number of query words it contains."""

    async def describe(self):
        return {"tag": "ranker:v2", "version": "v2", "labels": [], "task": "reranking"}

    async def score(self, pairs):
        self.calls.append(pairs)
        return [float(len(set(p["query"].split()) & set(p["passage"].split()))) for p in pairs]


def test_rerank_orders_sent_passages_and_keeps_their_ids(ranker):
    answer = asyncio.run(ranker.rerank.func(ranker, "card fee abroad", context(),
                                            passages=["mortgage rates", "card fee abroad rules", "card stolen"]))
    assert [(r.id, r.rank) for r in answer.results] == [("1", 1), ("2", 2), ("0", 3)]
    assert answer.results[0].score == 3.0 and answer.model_tag == "ranker:v2"
    named = asyncio.run(ranker.rerank.func(ranker, "card", context(), top_k=1,
                                           passages=[{"id": "x", "text": "loan"}, {"id": "y", "text": "card"}]))
    assert [r.id for r in named.results] == ["y"]


def test_rerank_by_passage_ids_without_a_passage_store_is_a_422(ranker):
    no_store = asyncio.run(ranker.rerank.func(ranker, "q", context(), passage_ids=["d1"]))
    assert no_store.status_code == 422 and b"no passage store" in no_store.body
