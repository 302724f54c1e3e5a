"""LLM teachers: a causal LM (local or behind an OpenAI-compatible endpoint) scored on label *verbalizers*.
Ensembles of teachers are loaded by :mod:`stillhouse.teachers.load`, which loads their members.

A verbalizer is the phrase that names a label (``card_arrival`` → " card arrival"). The teacher's logit for a
label is log P(verbalizer | prompt), where the prompt is an instruction, optional few-shot demonstrations
drawn from the seed set, and the text (Schick & Schütze 2021, PET; Brown et al. 2020 for few-shot prompting).
A softmax over these log-probabilities is the teacher's distribution over the label set: they are stored as
the logits, so the student's temperature applies to them like to any other teacher's.

A prompted teacher is "trained" by choosing its demonstrations; its folder holds ``teacher.json``::

    {"kind": "llm" | "endpoint", "labels": [...], "spec": {...}, "demonstrations": [{"text", "label"}, ...]}

An ensemble's ``teacher.json`` is ``{"kind": "ensemble", "labels", "weights", "members": ["member-0", ...]}``
next to one folder per member (an encoder classifier folder or a prompted teacher's folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.data.io import write_json
from stillhouse.errors import ModelError
from stillhouse.progress import progress, say
from stillhouse.spec import EndpointTeacherSpec, LLMTeacherSpec
from stillhouse.synth.prompts import readable_label
from stillhouse.teachers import TEACHER_FILE
from stillhouse.teachers.causal_lm import load_causal_lm, score_continuations
from stillhouse.teachers.endpoint import OpenAIEndpoint


def verbalizers(spec: LLMTeacherSpec | EndpointTeacherSpec, labels: list[str]) -> list[str]:
    """The phrase for each label, with the leading space a word has after ``Label:``."""
    given = spec.verbalizers or {}
    return [" " + (given.get(label) or readable_label(label)).strip() for label in labels]


def choose_demonstrations(seed: pd.DataFrame, labels: list[str], per_label: int, cap: int,
                          seed_value: int) -> list[dict]:
    """Up to ``per_label`` seed rows per label (at most ``cap`` in all), shuffled so no label sits last."""
    rng = np.random.default_rng(seed_value)
    chosen = []
    for label in labels:
        rows = seed.index[seed["label"] == label].to_numpy()
        for i in rng.choice(rows, size=min(per_label, len(rows)), replace=False):
            chosen.append({"text": str(seed.at[i, "text"]), "label": label})
    rng.shuffle(chosen)
    return chosen[:cap]


def verbalizer_prompt(spec: LLMTeacherSpec | EndpointTeacherSpec, labels: list[str], demonstrations: list[dict],
                      text: str) -> str:
    """Instruction, demonstrations ("Text: …\\nLabel: …"), then the text; ends at ``Label:`` for the verbalizer."""
    names = verbalizers(spec, labels)
    by_label = dict(zip(labels, names))
    instruction = spec.instruction.format(task=spec.task_description, labels=", ".join(n.strip() for n in names))
    shots = "".join(f"Text: {_clip(d['text'], spec.max_text_chars)}\nLabel:{by_label[d['label']]}\n\n"
                    for d in demonstrations)
    return f"{instruction}\n\n{shots}Text: {_clip(text, spec.max_text_chars)}\nLabel:"


def _clip(text: str, limit: int) -> str:
    return " ".join(text.split())[:limit]


def normalise_scores(logprobs: np.ndarray, token_counts: np.ndarray, score: str) -> np.ndarray:
    """``[n, K]`` label logits from summed verbalizer log-probs: as they are (``sum``), or per token (``mean``,
    which stops multi-token labels losing to one-token labels merely for being longer). ``token_counts`` is
    ``[K]`` (one count per verbalizer) or ``[n, K]`` (as an endpoint reports them per request)."""
    return logprobs / token_counts if score == "mean" else logprobs


class _DescribedPromptedTeacher:
    """What a prompted teacher reads from its ``teacher.json``: spec, label set, demonstrations, fingerprint."""

    spec_model: type = LLMTeacherSpec

    def __init__(self, folder: Path, description: dict):
        self.spec = self.spec_model.model_validate(description["spec"])
        self.labels, self.demonstrations = description["labels"], description["demonstrations"]
        self.fingerprint = dir_fingerprint(folder)


class PromptedLLMTeacher(_DescribedPromptedTeacher):
    """A local causal LM scored on verbalizers (see the module docstring)."""

    def __init__(self, folder: Path, description: dict, device: str = "cpu"):
        super().__init__(folder, description)
        self.name = f"llm:{self.spec.model}"
        self.model, self.tokenizer = load_causal_lm(self.spec.model, self.spec.gguf_file, device)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self._verbalizer_ids = [self.tokenizer(v, add_special_tokens=False)["input_ids"]
                                for v in verbalizers(self.spec, self.labels)]

    def logits(self, texts: list[str], desc: str | None = None) -> np.ndarray:
        counts = np.array([len(ids) for ids in self._verbalizer_ids], dtype=np.float64)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        for i, text in enumerate(progress(texts, desc=desc, total=len(texts)) if desc else texts):
            prompt = verbalizer_prompt(self.spec, self.labels, self.demonstrations, text)
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            out[i] = score_continuations(self.model, prompt_ids, self._verbalizer_ids)
        return normalise_scores(out, counts, self.spec.score).astype(np.float32)


class EndpointLLMTeacher(_DescribedPromptedTeacher):
    """The same verbalizer scoring over an OpenAI-compatible endpoint (completions with echo + logprobs)."""

    spec_model = EndpointTeacherSpec

    def __init__(self, folder: Path, description: dict, device: str = "cpu"):
        super().__init__(folder, description)
        self.name = f"endpoint:{self.spec.endpoint.model}@{self.spec.endpoint.url}"
        self.parameters = None  # behind the endpoint: unknown here
        self.endpoint = OpenAIEndpoint(self.spec.endpoint)

    def logits(self, texts: list[str], desc: str | None = None) -> np.ndarray:
        names = verbalizers(self.spec, self.labels)
        jobs = [(i, j) for i in range(len(texts)) for j in range(len(names))]
        prompts = [verbalizer_prompt(self.spec, self.labels, self.demonstrations, t) for t in texts]
        if desc:
            say(f"{desc}: {len(jobs)} requests to {self.spec.endpoint.url}")
        values = self.endpoint.map(lambda job: self.endpoint.continuation_logprob(prompts[job[0]], names[job[1]]), jobs)
        shape = (len(texts), len(names))
        scores = np.array([v for v, _ in values], dtype=np.float64).reshape(shape)
        counts = np.array([n for _, n in values], dtype=np.float64).reshape(shape)
        return normalise_scores(scores, counts, self.spec.score).astype(np.float32)


def save_prompted_teacher(spec: LLMTeacherSpec | EndpointTeacherSpec, labels: list[str], seed: pd.DataFrame,
                          seed_value: int, folder: Path) -> None:
    """Write a prompted teacher's folder: its spec, label set and chosen demonstrations."""
    demonstrations = choose_demonstrations(seed, labels, spec.shots_per_label, spec.max_shots, seed_value)
    write_json(folder / TEACHER_FILE, {"kind": spec.kind, "labels": list(labels),
                                       "spec": spec.model_dump(mode="json"), "demonstrations": demonstrations})


def load_described_teacher(folder: Path, device: str = "cpu", description: dict | None = None):
    """A prompted teacher from a folder with ``teacher.json`` (a local LLM or an endpoint); ``description`` is
    that file's content where the caller has read it already."""
    if description is None:
        description = json.loads((folder / TEACHER_FILE).read_text(encoding="utf-8"))
    kinds = {"llm": PromptedLLMTeacher, "endpoint": EndpointLLMTeacher}
    if description.get("kind") not in kinds:
        raise ModelError(f"{folder / TEACHER_FILE} has unknown kind {description.get('kind')!r}",
                         "point to a teacher folder written by a Stillhouse run")
    return kinds[description["kind"]](folder, description, device)
