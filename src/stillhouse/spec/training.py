"""The student and how it learns: its architecture (``student:``) and the distillation loss and schedule
(``distillation:``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from stillhouse.spec.base import _Strict


class TinyEncoderConfig(_Strict):
    """A small BERT-style encoder built from a config (random init); uses the teacher's tokenizer."""

    hidden_size: int = Field(128, gt=0)
    num_layers: int = Field(2, gt=0)
    num_heads: int = Field(2, gt=0)
    intermediate_size: int = Field(512, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyEncoderConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        return self


class VocabularySpec(_Strict):
    """Vocabulary pruning of a text student (``models/prune.py``): keep the embedding rows of the tokens the
    training texts use, the special tokens, and the tokenizer's most common pieces up to ``floor``."""

    prune: bool = Field(False, description="Prune the student's vocabulary embeddings to its training texts' "
                        "tokens (seed, pool, synthetic); a pruned-away token reads as [UNK] at serving time.")
    floor: int = Field(5000, ge=0, description="Keep at least this many tokens: after the texts' own, the "
                       "tokenizer's lowest ids (its most frequent pieces), so serving text meets fewer [UNK]s.")


class StudentSpec(_Strict):
    """The small model that learns from the teacher's soft labels."""

    kind: Literal["layer_subset", "pretrained", "config", "monot5", "mlp"] = Field(
        "layer_subset",
        description="`layer_subset`: the teacher's first `layers` layers and its head (same tokenizer); "
        "`pretrained`: any Hugging Face encoder `model`; `config`: a small random-init encoder; `monot5` "
        "(re-ranking): a sequence-to-sequence re-ranker, a T5/monoT5 checkpoint `model` or a random-init T5 "
        "built from `config` over the teacher's tokenizer; `mlp` (tabular): a small multi-layer perceptron "
        "over the preprocessed columns (`hidden: []` is logistic regression).",
    )
    layers: int | None = Field(
        None, gt=0, description="`layer_subset`: how many of the teacher's layers to keep (default 2); "
        "`pretrained`: keep only the pretrained encoder's first `layers` layers (default: all of them).")
    model: str | None = Field(None, description="Model for `pretrained` (same forms as teacher.model).")
    hidden: list[int] = Field([64, 32], description="`mlp`: hidden layer widths (empty: a linear model).")
    dropout: float = Field(0.1, ge=0, lt=1, description="`mlp`: dropout after each hidden layer.")
    config: TinyEncoderConfig | None = Field(None, description="Architecture for `config`.")
    max_length: int | None = Field(None, gt=0, description="Default: the teacher's max_length.")
    vocabulary: VocabularySpec = Field(VocabularySpec(), description="Text students: vocabulary pruning.")
    head_init: Literal["logistic_regression", "copy_teacher", "random"] = Field(
        "logistic_regression",
        description="Student head before training: logistic regression on the student's own embeddings of the "
        "seed set (its features differ from the teacher's), the teacher's head (`layer_subset` only), or random.",
    )

    @property
    def kept_layers(self) -> int:
        """The layers a `layer_subset` student keeps."""
        return self.layers or 2

    @model_validator(mode="after")
    def _kind_fields(self) -> StudentSpec:
        if self.layers is not None and self.kind not in ("layer_subset", "pretrained"):
            raise ValueError("student.layers is for kind `layer_subset` (the teacher's first layers) or "
                             "`pretrained` (the pretrained encoder's first layers)")
        if self.kind == "pretrained" and not self.model:
            raise ValueError("kind `pretrained` needs `model`")
        if self.kind == "config" and self.config is None:
            raise ValueError("kind `config` needs `config`")
        if self.kind == "monot5" and not self.model and self.config is None:
            raise ValueError("kind `monot5` needs `model` (a T5 or monoT5 checkpoint) or `config` (a random-init T5)")
        if self.vocabulary.prune and self.kind not in ("layer_subset", "pretrained", "config"):
            raise ValueError("vocabulary.prune is for text encoder students (kind layer_subset, pretrained or "
                             "config)")
        if self.head_init == "copy_teacher" and self.kind != "layer_subset":
            raise ValueError("head_init `copy_teacher` needs kind `layer_subset` (same hidden size as the teacher)")
        return self


class RepresentationSpec(_Strict):
    """Representation distillation (classification, ``distill/representation.py``): the student also learns its
    teacher's sentence embedding of every seed, pool and synthetic text, through a projection fitted by least
    squares (so teacher and student may differ in family and width)."""

    epochs: int = Field(0, ge=0, description="Epochs of a first stage in which the student learns only the "
                        "teacher's embeddings (1 − cosine), before the label distillation; 0: no such stage.")
    weight: float = Field(0.0, ge=0, description="Weight of the same cosine term added to every row's loss during "
                          "the label distillation; 0: off.")
    learning_rate: float | None = Field(None, gt=0, description="Encoder learning rate of the first stage "
                                        "(default: distillation.learning_rate).")

    @property
    def enabled(self) -> bool:
        return self.epochs > 0 or self.weight > 0


class DistillationSpec(_Strict):
    """Student training: alpha*CE(y, s) + (1-alpha)*T^2*KL(teacher_T || student_T); KL only where no label."""

    temperature: float = Field(2.0, gt=0, description="Softmax temperature T for the KL term.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the hard-label cross-entropy on labelled rows.")
    epochs: int = Field(3, gt=0)
    batch_size: int = Field(32, gt=0)
    learning_rate: float = Field(1e-4, gt=0, description="Student encoder learning rate.")
    head_learning_rate: float = Field(1e-3, gt=0, description="Student head learning rate.")
    sources: list[Literal["seed", "pool", "synthetic"]] = Field(
        ["seed", "pool", "synthetic"], min_length=1,
        description="Rows the student learns from: the labelled seed (hard + soft labels), the soft-labelled pool, "
        "and the kept synthetic rows (soft labels only).")
    # benchmarks/synthetic.py (SmolLM2 rows, mean of 3 student seeds): against seed only, weight 1.0 gives +0.46
    # points on Banking77 and -0.41 on Twitter (MPNet teacher), weight 0.3 +0.66 and +2.33 (MiniLM teacher on
    # Twitter: -3.2 and -2.3). A small generator's text is unlike the real data; its rows should steer the
    # student, not outweigh the real rows. Raise it for a strong generator.
    synthetic_weight: float = Field(
        0.3, gt=0, le=1, description="Loss weight of each synthetic row relative to a real one (1 = equal). Low "
        "by default: rows from a small generator read unlike real data; raise it for a strong generator.")
    representation: RepresentationSpec = Field(
        RepresentationSpec(), description="Classification: the student also learns the teacher's sentence "
        "embeddings (a first stage of `epochs`, and/or a term of `weight` in the label loss); off by default.")
    freeze_word_embeddings: bool = Field(
        True, description="Keep the student's vocabulary embeddings fixed (copied from the teacher or pretrained); "
        "ignored for `student.kind: config`, whose embeddings start random and must learn."
    )
