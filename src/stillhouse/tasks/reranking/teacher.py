"""Re-ranking teachers behind one interface: (query, passage) pairs in, relevance log-odds out.

- a cross-encoder folder (``reranker.json``): the fine-tuned teacher, scored directly;
- a prompted LLM (local causal LM or an OpenAI-compatible endpoint) asked "is this passage relevant to the
  query?" after a few judged seed examples; the score is ``log P(yes) − log P(no)`` of the answer word (the
  relevance-generation scoring of Liang et al. 2022, HELM; Sachan et al. 2022 score the query instead);
- an ensemble: the weighted mean of its members' relevance probabilities ``σ(score)``, returned as log-odds.

A prompted or ensemble teacher's folder holds ``teacher.json``::

    {"kind": "llm" | "endpoint", "task": "reranking", "spec": {...}, "prompt": {...}, "demonstrations": [...]}
    {"kind": "ensemble", "task": "reranking", "weights": [...], "members": ["member-0", ...]}
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.data.io import write_json
from stillhouse.errors import ModelError
from stillhouse.models.hf import count_parameters
from stillhouse.models.reranker import RERANKER_FILE, load_reranker, score_pairs
from stillhouse.progress import progress, say
from stillhouse.spec import EndpointTeacherSpec, LLMTeacherSpec, RankingSpec
from stillhouse.teachers import TEACHER_FILE
from stillhouse.teachers.causal_lm import load_causal_lm, score_continuations
from stillhouse.teachers.endpoint import OpenAIEndpoint
from stillhouse.teachers.ensemble import Ensemble, mean_probability_logit


def ranking_prompt(prompt: dict, demonstrations: list[dict], query: str, passage: str) -> str:
    """Instruction, judged examples ("Query: …\\nPassage: …\\nRelevant: yes"), then the pair; ends at
    ``Relevant:`` so the next word is the answer."""
    limit = prompt["max_passage_chars"]

    def block(q: str, p: str) -> str:
        return f"Query: {' '.join(q.split())}\nPassage: {' '.join(p.split())[:limit].rstrip()}\nRelevant:"

    shots = "".join(f"{block(d['query'], d['passage'])}{prompt['yes'] if d['relevant'] else prompt['no']}\n\n"
                    for d in demonstrations)
    return f"{prompt['instruction']}\n\n{shots}{block(query, passage)}"


def choose_ranking_demonstrations(groups, shots: int, seed_value: int) -> list[dict]:
    """``shots`` judged seed pairs, alternating relevant and not relevant, from different queries."""
    rng = np.random.default_rng(seed_value)
    chosen = []
    for row in rng.permutation(len(groups)):
        if len(chosen) >= shots:
            break
        query, passages, relevance = (groups.iloc[row][k] for k in ("query", "passages", "relevance"))
        want_relevant = len(chosen) % 2 == 0
        options = [i for i, g in enumerate(relevance) if (g > 0) == want_relevant and g >= 0]
        if options:
            i = options[int(rng.integers(len(options)))]
            chosen.append({"query": query, "passage": passages[i], "relevant": want_relevant})
    return chosen


def save_prompted_ranker(spec: LLMTeacherSpec | EndpointTeacherSpec, ranking: RankingSpec, seed_groups,
                         seed_value: int, folder: Path) -> None:
    prompt = {"instruction": ranking.llm_instruction, "yes": ranking.llm_yes, "no": ranking.llm_no,
              "max_passage_chars": ranking.llm_max_passage_chars}
    write_json(folder / TEACHER_FILE, {
        "kind": spec.kind, "task": "reranking", "spec": spec.model_dump(mode="json"), "prompt": prompt,
        "demonstrations": choose_ranking_demonstrations(seed_groups, ranking.llm_shots, seed_value)})


class RerankerModel:
    """A saved re-ranker folder (a fine-tuned cross-encoder teacher, or any student), scored directly."""

    def __init__(self, folder: Path, device: str = "cpu"):
        self.model, self.tokenizer, self.info = load_reranker(folder)
        self.name = f"{self.info.kind}:{self.info.base_model}"
        self.fingerprint = dir_fingerprint(folder)
        self.parameters = count_parameters(self.model)
        self.device = device

    def score(self, queries: list[str], passages: list[str], desc: str | None = None) -> np.ndarray:
        return score_pairs(self.model, self.tokenizer, queries, passages, self.info.max_length, desc=desc,
                           device=self.device)


class PromptedRanker:
    """A causal LM (local) or an endpoint asked for the yes/no answer; score ``log P(yes) − log P(no)``."""

    def __init__(self, folder: Path, description: dict, device: str = "cpu"):
        self.prompt, self.demonstrations = description["prompt"], description["demonstrations"]
        self.fingerprint = dir_fingerprint(folder)
        if description["kind"] == "endpoint":
            self.spec = EndpointTeacherSpec.model_validate(description["spec"])
            self.endpoint, self.parameters = OpenAIEndpoint(self.spec.endpoint), None
            self.name = f"endpoint:{self.spec.endpoint.model}@{self.spec.endpoint.url}"
        else:
            self.spec = LLMTeacherSpec.model_validate(description["spec"])
            self.model, self.tokenizer = load_causal_lm(self.spec.model, self.spec.gguf_file, device)
            self.parameters = sum(p.numel() for p in self.model.parameters())
            self.name, self.endpoint = f"llm:{self.spec.model}", None
            self._answers = [self.tokenizer(w, add_special_tokens=False)["input_ids"]
                             for w in (self.prompt["yes"], self.prompt["no"])]

    def score(self, queries: list[str], passages: list[str], desc: str | None = None) -> np.ndarray:
        prompts = [ranking_prompt(self.prompt, self.demonstrations, q, p) for q, p in zip(queries, passages)]
        if self.endpoint is not None:
            if desc:
                say(f"{desc}: {2 * len(prompts)} requests to {self.spec.endpoint.url}")
            jobs = [(i, word) for i in range(len(prompts)) for word in (self.prompt["yes"], self.prompt["no"])]
            values = self.endpoint.map(lambda job: self.endpoint.continuation_logprob(prompts[job[0]], job[1]), jobs)
            logprobs = np.array([v for v, _ in values], dtype=np.float64).reshape(len(prompts), 2)
            return (logprobs[:, 0] - logprobs[:, 1]).astype(np.float32)
        out = np.zeros(len(prompts), dtype=np.float32)
        for i, prompt in enumerate(progress(prompts, desc=desc, total=len(prompts)) if desc else prompts):
            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            yes, no = score_continuations(self.model, ids, self._answers)
            out[i] = yes - no
        return out


class EnsembleRanker(Ensemble):
    """The weighted mean of its members' relevance probabilities, as log-odds."""

    def __init__(self, folder: Path, description: dict, device: str = "cpu"):
        super().__init__(folder, description, load_ranking_teacher, device)

    def score(self, queries: list[str], passages: list[str], desc: str | None = None) -> np.ndarray:
        return self.mixed("score", mean_probability_logit, queries, passages, desc=desc)


def load_ranking_teacher(folder: str | Path, device: str = "cpu"):
    """Any re-ranking teacher folder: a cross-encoder, a prompted LLM or endpoint, or an ensemble of them."""
    folder = Path(folder)
    if (folder / RERANKER_FILE).is_file():
        return RerankerModel(folder, device)
    if not (folder / TEACHER_FILE).is_file():
        raise ModelError(f"{folder} is not a re-ranking teacher (no reranker.json or {TEACHER_FILE})",
                         "point to the teacher folder of a re-ranking run")
    description = json.loads((folder / TEACHER_FILE).read_text(encoding="utf-8"))
    if description.get("task") != "reranking":
        raise ModelError(f"{folder / TEACHER_FILE} describes a classification teacher",
                         "use a teacher built by a re-ranking run")
    if description["kind"] == "ensemble":
        return EnsembleRanker(folder, description, device)
    return PromptedRanker(folder, description, device)


def score_groups(scorer, groups: pd.DataFrame, desc: str | None = None) -> list[np.ndarray]:
    """Each query's candidate scores ``[n_candidates]``, in the group's candidate order; ``scorer`` is any
    re-ranking teacher or model with ``score(queries, passages, desc)`` (:mod:`stillhouse.tasks.reranking.teacher`)."""
    queries = [q for q, passages in zip(groups["query"], groups["passages"]) for _ in passages]
    passages = [p for group in groups["passages"] for p in group]
    flat = scorer.score(queries, passages, desc=desc) if queries else np.zeros(0, dtype=np.float32)
    bounds = np.cumsum([0] + [len(p) for p in groups["passages"]])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
