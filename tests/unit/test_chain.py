"""Chain specs and routing with stub students (no BentoML)."""

import asyncio

import pytest

from stillhouse.errors import ServeConfigError
from stillhouse.serve.chain import ChainSpec, load_chain, run_chain

SPEC = {"name": "triage", "steps": [
    {"name": "intent", "model": "intent:latest"},
    {"name": "sentiment", "model": "sentiment:latest", "when": {"step": "intent", "labels": ["complaint"]}},
    {"name": "urgency", "model": "urgency:latest",
     "when": {"step": "intent", "labels": ["complaint"], "min_confidence": 0.6}},
    {"name": "escalate", "model": "escalate:latest", "when": {"step": "sentiment", "labels": ["angry"]}},
]}


def stub(step, texts):
    """A stub student per step: intent reads the word 'complaint', confidence from the text length."""
    async def answer():
        calls.append((step, list(texts)))
        label = {"intent": lambda t: "complaint" if "complaint" in t else "question",
                 "sentiment": lambda t: "angry" if "!" in t else "calm",
                 "urgency": lambda t: "high", "escalate": lambda t: "yes"}[step]
        return [{"label": label(t), "confidence": 0.9 if len(t) > 20 else 0.55, "probabilities": {}} for t in texts]
    return answer()


calls = []


def test_steps_run_only_where_earlier_answers_say_and_concurrent_levels_group():
    calls.clear()
    spec = ChainSpec.model_validate(SPEC)
    assert [[s.name for s in level] for level in spec.levels()] == [["intent"], ["sentiment", "urgency"],
                                                                     ["escalate"]]
    texts = ["a complaint, a long one!", "short complaint", "where is my card?"]
    out = asyncio.run(run_chain(spec, texts, stub))
    assert [r["label"] for r in out["intent"]] == ["complaint", "complaint", "question"]
    assert [r and r["label"] for r in out["sentiment"]] == ["angry", "calm", None]
    assert [r and r["label"] for r in out["urgency"]] == ["high", None, None]  # 0.55 < min_confidence 0.6
    assert [r and r["label"] for r in out["escalate"]] == ["yes", None, None]
    assert ("intent", texts) in calls and ("urgency", [texts[0]]) in calls
    assert all(step != "escalate" or chosen == [texts[0]] for step, chosen in calls)


def test_a_step_with_no_selected_text_is_not_called():
    calls.clear()
    out = asyncio.run(run_chain(ChainSpec.model_validate(SPEC), ["where is my card?"], stub))
    assert out["sentiment"] == [None] and [step for step, _ in calls] == ["intent"]


@pytest.mark.parametrize("change, message", [
    ({"steps": [SPEC["steps"][1]]}, "not an earlier step"),
    ({"steps": [SPEC["steps"][0], SPEC["steps"][0]]}, "used twice"),
    ({"steps": [{"name": "Intent", "model": "x"}]}, "steps.0.name"),
    ({"steps": []}, "steps"),
])
def test_bad_chain_specs_name_the_problem(tmp_path, change, message):
    import yaml

    path = tmp_path / "chain.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **change}))
    with pytest.raises(ServeConfigError, match=message):
        load_chain(path)


def test_conditions_on_labels_a_step_never_outputs_are_refused():
    spec = ChainSpec.model_validate(SPEC)
    labels = {"intent": ["complaint", "question"], "sentiment": ["angry", "calm"], "urgency": ["high"],
              "escalate": ["yes"]}
    spec.check_labels(labels)
    with pytest.raises(ServeConfigError, match=r"waits for label\(s\) \['complaint'\]"):
        spec.check_labels({**labels, "intent": ["question", "other"]})


def test_shipped_serving_examples_load():
    from stillhouse.serve.launch import config_from_flags
    from tests.conftest import REPO

    chain = load_chain(REPO / "examples" / "serving" / "chain.yaml")
    assert [s.name for s in chain.steps] == ["intent", "sentiment"]
    config = config_from_flags(str(REPO / "examples" / "serving" / "serve.yaml"), "out", model="student:latest")
    assert config.model == "student:latest" and config.auth.enabled and not config.audit.log_inputs


def test_config_flags_override_the_file_and_empty_sections_are_defaults(tmp_path):
    from stillhouse.serve.launch import config_from_flags

    path = tmp_path / "serve.yaml"
    path.write_text("model: a:1\nauth:\naudit: {log_inputs: true}\n")
    config = config_from_flags(str(path), tmp_path / "out", no_auth=True, no_batching=True)
    assert config.model == "a:1" and not config.auth.enabled and not config.batching.enabled
    assert config.audit.log_inputs and config.audit.path == str((tmp_path / "out" / "audit.jsonl").resolve())
    path.write_text("model: a:1\naudit: yes\n")
    with pytest.raises(ServeConfigError, match="audit"):
        config_from_flags(str(path), tmp_path / "out")
