"""The student service's methods with a stub model (no HTTP, no model store): readiness, answers, feedback."""

import asyncio
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
        return {"tag": "stub:v1", "version": "v1", "labels": ["bad", "good"]}

    async def predict(self, texts):
        self.calls.append(list(texts))
        return [{"label": "bad" if "bad" in t else "good", "confidence": 0.9,
                 "probabilities": {"bad": 0.9, "good": 0.1} if "bad" in t else {"bad": 0.1, "good": 0.9}}
                for t in texts]


@pytest.fixture()
def student(tmp_path, monkeypatch):
    (tmp_path / "serve.yaml").write_text(json.dumps({
        "model": "stub:v1", "auth": {"enabled": False}, "feedback": {"path": str(tmp_path / "fb.sqlite")},
        "audit": {"path": str(tmp_path / "audit.jsonl")}}))
    monkeypatch.setenv("STILLHOUSE_SERVE_CONFIG", str(tmp_path / "serve.yaml"))
    from stillhouse.serving import student_service

    monkeypatch.setattr(student_service, "CONFIG", student_service.load_serve_config())
    service = student_service.Student.inner()
    service.model = StubModel(fail_describe=1)
    return service


def context(request_id="r-1", principal="alice"):
    request = types.SimpleNamespace(headers={"x-request-id": request_id, "x-stillhouse-principal": principal})
    return types.SimpleNamespace(request=request, response=types.SimpleNamespace(status_code=200))


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


def test_feedback_refuses_unknown_labels_and_chain_steps_with_422(student):
    student.model.fail_describe = 0
    ctx = context()
    wrong = asyncio.run(student.feedback.func(student, "neutral", ctx, text="x"))
    assert wrong.status_code == 422 and ctx.response.status_code == 422
    assert b"not one of the model's 2 labels" in wrong.body
    step = asyncio.run(student.feedback.func(student, "good", context(), text="x", step="intent"))
    assert step.status_code == 422 and b"for chains" in step.body
