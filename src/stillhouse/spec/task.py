"""The spec's task sections: what each task predicts, from what, and its own settings.

Each section class is one task's ``task:`` (``type`` names the task) and decides the rest of the spec for it:
``data_layout`` is the ``data:`` layout the task reads, ``spec_defaults`` fills in task-specific defaults of other
sections, and ``check_spec`` checks the whole spec against the task. :data:`TASK_SECTIONS` (in
:mod:`stillhouse.spec`) maps a task's name to its section; a task registered by a plugin without one of its own
gets :class:`TaskSpec` (text → label).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from stillhouse.spec.base import _Strict
from stillhouse.spec.ranking import RankingSpec
from stillhouse.spec.tabular import TABULAR_STUDENTS, TABULAR_TEACHERS
from stillhouse.spec.teachers import EnsembleTeacherSpec, encoder_teacher
from stillhouse.tasks import known_tasks, unknown_task_message


def _check_text_task(spec) -> None:
    """What every text task (classification, re-ranking) asks of the spec: a student that can read the teacher's
    tokens, and none of the tabular task's teachers, student, features or generator."""
    own_tokenizer = spec.student.kind == "pretrained" or (spec.student.kind == "monot5" and spec.student.model)
    if encoder_teacher(spec.teacher) is None and not own_tokenizer:
        raise ValueError(f"student.kind `{spec.student.kind}` builds on the teacher's encoder and tokenizer, "
                         "but this teacher has no encoder: use student.kind `pretrained` with student.model, "
                         "or an ensemble with an encoder member")
    members = spec.teacher.members if isinstance(spec.teacher, EnsembleTeacherSpec) else [spec.teacher]
    if any(isinstance(m, TABULAR_TEACHERS) for m in members) or spec.student.kind in TABULAR_STUDENTS \
            or getattr(spec.data, "features", None) is not None \
            or (spec.synthesis is not None and spec.synthesis.generator == "copula"):
        raise ValueError("gradient_boosting / logistic_regression teachers, student.kind `mlp`, "
                         "data.features and generator `copula` are for task.type `tabular`")


class TaskSpec(_Strict):
    """Text → label (task ``classification``, the default; also any plugin task without a section of its own)."""

    data_layout: ClassVar[str] = "files"

    type: str = Field(
        "classification", description="A registered task (stillhouse.tasks): `classification` (text → label), "
        "`reranking` (query + candidate passages → relevance scores, RerankingTaskSpec), `tabular` "
        "(TabularTaskSpec), or a task registered by a plugin.")
    text_field: str = Field("text", description="Column holding the input text.")
    label_field: str = Field("label", description="Column holding the gold label (seed and evaluation sets).")
    labels: list[str] | None = Field(
        None, description="The label set, in order. Default: the sorted labels found in the seed set."
    )

    @field_validator("type")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in known_tasks():
            raise ValueError(unknown_task_message(name))
        return name

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if len(labels) < 2:
                raise ValueError("needs at least 2 labels")
            if len(set(labels)) != len(labels):
                raise ValueError("labels must be unique")
        return labels

    @classmethod
    def spec_defaults(cls, raw: dict) -> dict:
        return raw

    def check_spec(self, spec) -> None:
        _check_text_task(spec)
        if spec.student.kind == "monot5":
            raise ValueError("student.kind `monot5` is a re-ranker: use it with task.type `reranking`")
        if spec.distillation.representation.enabled and encoder_teacher(spec.teacher) is None:
            raise ValueError("distillation.representation learns the teacher's sentence embeddings, and this "
                             "teacher has no encoder: use an encoder teacher (or an ensemble with one), or "
                             "set distillation.representation epochs and weight to 0")


class RerankingTaskSpec(RankingSpec):
    """Query + candidate passages → relevance scores; ``data`` takes the BEIR layout (RankingDataSpec). The other
    fields are how re-rankers learn (formerly the spec's top-level ``ranking:`` section)."""

    data_layout: ClassVar[str] = "beir"

    type: Literal["reranking"]

    @classmethod
    def spec_defaults(cls, raw: dict) -> dict:
        return raw

    def check_spec(self, spec) -> None:
        _check_text_task(spec)
        if spec.synthesis is not None and spec.synthesis.generator == "augment":
            raise ValueError("re-ranking synthesis writes queries with a language model: use generator `llm` "
                             "or `endpoint`")
        student = self.teacher_architecture if self.student_architecture == "teacher" else self.student_architecture
        if self.embedding_epochs and (encoder_teacher(spec.teacher) is None or self.teacher_architecture != "bi_encoder"
                                      or student != "bi_encoder" or spec.student.kind == "monot5"):
            raise ValueError("task.embedding_epochs distils a bi-encoder teacher's embeddings into a "
                             "bi-encoder student: use an encoder teacher with task.teacher_architecture "
                             "`bi_encoder` and a bi-encoder student, or set task.embedding_epochs to 0")
        if spec.distillation.representation.enabled:
            raise ValueError("distillation.representation is for classification; a re-ranker learns its "
                             "teacher's embeddings with task.embedding_epochs")
        if spec.package.runtime != "torch":
            raise ValueError("package.runtime `onnx` serves classification students; re-ranking students are "
                             "served with `torch`")
        if spec.student.vocabulary.prune:
            raise ValueError("student.vocabulary.prune is for classification students; re-ranking students keep "
                             "their vocabulary")
