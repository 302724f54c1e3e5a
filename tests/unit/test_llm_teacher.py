"""Causal LM scoring, the verbalizer teacher and ensembles, on a tiny random Llama with SmolLM2's tokenizer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from stillhouse.evaluate.metrics import softmax
from stillhouse.spec import LLMTeacherSpec
from stillhouse.teachers.causal_lm import (chat_prompt, continuation_ids, generate_texts, load_causal_lm,
                                           score_continuations)
from stillhouse.teachers.ensemble import ensemble_logits
from stillhouse.teachers.llm import (choose_demonstrations, load_described_teacher,
                                     normalise_scores, save_prompted_teacher, verbalizer_prompt, verbalizers)

LABELS = ["card_arrival", "exchange_rate", "lost_or_stolen_card"]
SEED = pd.DataFrame({
    "row_id": [f"seed-{i:07d}" for i in range(6)],
    "text": ["where is my card", "card still not here", "what rate do you use", "euro to dollar rate today",
             "someone stole my card", "i lost my wallet and card"],
    "label": ["card_arrival", "card_arrival", "exchange_rate", "exchange_rate", "lost_or_stolen_card",
              "lost_or_stolen_card"],
})


@pytest.fixture(scope="module")
def tiny_lm(tiny_causal_lm_dir):
    return load_causal_lm(str(tiny_causal_lm_dir))


def direct_logprob(model, ids: list[int], start: int) -> float:
    """log P(ids[start:] | ids[:start]) with one plain forward pass, token by token."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    return float(sum(logprobs[p - 1, ids[p]] for p in range(start, len(ids))))


def test_continuation_scores_match_a_direct_forward_pass(tiny_lm):
    model, tokenizer = tiny_lm
    prompt_ids, conts = continuation_ids(tokenizer, "Text: my card is late\nLabel:", [" card arrival", " rate",
                                                                                     " lost or stolen card"])
    scores = score_continuations(model, prompt_ids, conts)
    for score, cont in zip(scores, conts):
        assert score == pytest.approx(direct_logprob(model, prompt_ids + cont, len(prompt_ids)), abs=1e-4)
    assert (scores < 0).all()
    with pytest.raises(ValueError):
        score_continuations(model, prompt_ids, [[]])


def test_verbalizers_and_prompt():
    spec = LLMTeacherSpec(kind="llm", verbalizers={"exchange_rate": "rates"})
    assert verbalizers(spec, LABELS) == [" card arrival", " rates", " lost or stolen card"]
    prompt = verbalizer_prompt(spec, LABELS, [{"text": "where is my card", "label": "card_arrival"}], "a  new\ntext")
    assert prompt.startswith("Classify the message into one of these labels: card arrival, rates, lost or stolen card.")
    assert "Text: where is my card\nLabel: card arrival\n\n" in prompt and prompt.endswith("Text: a new text\nLabel:")


def test_demonstrations_per_label_and_capped():
    chosen = choose_demonstrations(SEED, LABELS, 1, 16, 0)
    assert sorted(d["label"] for d in chosen) == sorted(LABELS)
    assert len(choose_demonstrations(SEED, LABELS, 2, 4, 0)) == 4
    assert choose_demonstrations(SEED, LABELS, 0, 16, 0) == []


def test_prompted_teacher_gives_distributions_matching_direct_scores(tmp_path, tiny_causal_lm_dir, tiny_lm):
    spec = LLMTeacherSpec(kind="llm", model=str(tiny_causal_lm_dir), shots_per_label=1)
    save_prompted_teacher(spec, LABELS, SEED, 0, tmp_path)
    teacher = load_described_teacher(tmp_path)
    assert teacher.name == f"llm:{tiny_causal_lm_dir}" and teacher.parameters > 0
    texts = ["my card never arrived", "how much is the dollar"]
    logits = teacher.logits(texts)
    assert logits.shape == (2, 3)
    assert np.allclose(softmax(logits.astype(np.float64)).sum(1), 1.0)
    model, tokenizer = tiny_lm
    prompt = verbalizer_prompt(spec, LABELS, teacher.demonstrations, texts[1])
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for j, phrase in enumerate(verbalizers(spec, LABELS)):
        ids = prompt_ids + tokenizer(phrase, add_special_tokens=False)["input_ids"]
        assert logits[1, j] == pytest.approx(direct_logprob(model, ids, len(prompt_ids)), abs=1e-3)


def test_mean_score_divides_by_verbalizer_tokens():
    scores = np.array([[-2.0, -6.0]])
    assert normalise_scores(scores, np.array([1.0, 3.0]), "mean").tolist() == [[-2.0, -2.0]]
    assert normalise_scores(scores, np.array([1.0, 3.0]), "sum").tolist() == [[-2.0, -6.0]]


def test_ensemble_averages_probabilities():
    a = np.log(np.array([[0.8, 0.2], [0.5, 0.5]]))
    b = np.log(np.array([[0.2, 0.8], [0.1, 0.9]]))
    mixed = ensemble_logits([a, b], np.array([0.75, 0.25]))
    probs = softmax(mixed.astype(np.float64))
    assert np.allclose(probs.sum(1), 1.0)
    assert np.allclose(probs, [[0.65, 0.35], [0.4, 0.6]], atol=1e-6)


def test_generation_is_batched_and_reproducible(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = [chat_prompt(tokenizer, f"write about topic {i}") for i in range(3)]
    assert "<|im_start|>assistant" in prompts[0]  # SmolLM2's chat template
    first = generate_texts(model, tokenizer, prompts, temperature=0.9, top_p=0.95, max_new_tokens=6, batch_size=2,
                           seed=3)
    again = generate_texts(model, tokenizer, prompts, temperature=0.9, top_p=0.95, max_new_tokens=6, batch_size=2,
                           seed=3)
    assert len(first) == 3 and first == again
