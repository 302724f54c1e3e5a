"""The distillation spec: one YAML file describes a whole run, validated before anything runs.

Load with :func:`load_spec` (a file) or :func:`parse_spec` (YAML text). Relative data paths are resolved
against the spec file's folder so a spec can travel with its data. A bad spec raises :class:`SpecError`
whose message names every offending field path (``data.seed.path``) and the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from stillhouse.errors import SpecError
from stillhouse.tasks import known_tasks, unknown_task_message
from stillhouse.spec.base import EndpointSpec, _Strict, validation_problems
from stillhouse.spec.evaluation import EvaluationSpec
from stillhouse.spec.data import DataSource, DataSpec, SamplingSpec
from stillhouse.spec.package import PackageSpec
from stillhouse.spec.ranking import RankingDataSpec, RankingSpec
from stillhouse.spec.runtime import (
    DEPLOYMENT_FIELDS,
    KubeRaySpec,
    KubernetesSpec,
    RuntimeSpec,
)
from stillhouse.spec.tabular import (
    TABULAR_DISTILLATION,
    CostSpec,
    FeaturesSpec,
    GateSpec,
    GradientBoostingTeacherSpec,
    LogisticTeacherSpec,
    ProfilesSpec,
    ScenarioSpec,
    TabularTaskSpec,
)
from stillhouse.spec.synthesis import (
    AugmentSpec,
    LLMGeneratorSpec,
    QuerySynthesisSpec,
    SynthesisFilterSpec,
    SynthesisSpec,
)
from stillhouse.spec.training import (
    DistillationSpec,
    RepresentationSpec,
    StudentSpec,
    TinyEncoderConfig,
    VocabularySpec,
)
from stillhouse.spec.teachers import (
    EncoderTeacherSpec,
    EndpointTeacherSpec,
    EnsembleTeacherSpec,
    LLMTeacherSpec,
    TeacherSpec,
    _with_kind,
    encoder_teacher,
)
from stillhouse.spec.validation import (
    SeedChecks,
    SoftLabelChecks,
    SyntheticChecks,
    ValidationSpec,
)


class TaskSpec(_Strict):
    """What is predicted from what."""

    type: str = Field(
        "classification", description="A registered task (stillhouse.tasks): `classification` (text → label) or "
        "`reranking` (query + candidate passages → relevance scores; `data` then takes the BEIR layout, see "
        "RankingDataSpec).")
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


def _data_kind(value) -> str:
    fields = value if isinstance(value, dict) else vars(value) if hasattr(value, "__dict__") else {}
    return "reranking" if "corpus" in fields or "qrels" in fields else "classification"


def _task_kind(value) -> str:
    name = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "tabular" if name == "tabular" else "text"


TaskSection = Annotated[Annotated[TaskSpec, Tag("text")] | Annotated[TabularTaskSpec, Tag("tabular")],
                        Discriminator(_task_kind)]
# the teachers and the student that learn from rows of columns rather than text
TABULAR_TEACHERS = (GradientBoostingTeacherSpec, LogisticTeacherSpec)
TABULAR_STUDENTS = ("mlp",)

DataSection = Annotated[Annotated[DataSpec, Tag("classification")] | Annotated[RankingDataSpec, Tag("reranking")],
                        Discriminator(_data_kind)]


class Spec(_Strict):
    """A whole distillation run."""

    name: str = Field(description="Run name; runs land in `<output_dir>/<name>/<timestamp>/`.")
    description: str = Field("", description="One line on the intended use (goes into the model card).")
    task: TaskSection = Field(TaskSpec(), description="`type: classification` (default), `reranking` or "
                              "`tabular` (TabularTaskSpec), or a task registered by a plugin.")
    data: DataSection = Field(description="Seed/pool/eval files (classification), or a BEIR-layout set (reranking).")
    teacher: TeacherSpec = Field(description="`kind: encoder` (default), `llm`, `endpoint` or `ensemble`.")
    student: StudentSpec = StudentSpec()
    distillation: DistillationSpec = DistillationSpec()
    synthesis: SynthesisSpec | None = Field(None, description="Synthetic data (off when absent).")
    ranking: RankingSpec = Field(RankingSpec(), description="Re-ranking losses and batching (task `reranking`).")
    evaluation: EvaluationSpec = EvaluationSpec()
    validation: ValidationSpec = ValidationSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    package: PackageSpec = PackageSpec()
    output_dir: str = Field("runs", description="Folder for run folders (relative to the spec's folder, like every "
                            "path in a spec).")

    @model_validator(mode="before")
    @classmethod
    def _tabular_defaults(cls, raw):
        """Task `tabular` trains an MLP from scratch: its own `distillation` defaults where the spec is silent
        (filled into the spec itself, so the run folder's spec says what ran)."""
        if isinstance(raw, dict) and isinstance(raw.get("task"), dict) and raw["task"].get("type") == "tabular":
            distillation = raw.get("distillation")
            if distillation is None or isinstance(distillation, dict):
                raw = {**raw, "distillation": {**TABULAR_DISTILLATION, **(distillation or {})}}
        return raw

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_kind(cls, teacher):
        return _with_kind(teacher)

    @model_validator(mode="after")
    def _student_fits_teacher(self) -> "Spec":
        if self.task.type == "tabular":
            return self
        own_tokenizer = self.student.kind == "pretrained" or (self.student.kind == "monot5" and self.student.model)
        if encoder_teacher(self.teacher) is None and not own_tokenizer:
            raise ValueError(f"student.kind `{self.student.kind}` builds on the teacher's encoder and tokenizer, "
                             "but this teacher has no encoder: use student.kind `pretrained` with student.model, "
                             "or an ensemble with an encoder member")
        return self

    @model_validator(mode="after")
    def _tabular_fits(self) -> "Spec":
        members = self.teacher.members if isinstance(self.teacher, EnsembleTeacherSpec) else [self.teacher]
        tabular_teacher = [isinstance(m, TABULAR_TEACHERS) for m in members]
        if self.task.type == "tabular" and self.distillation.representation.enabled:
            raise ValueError("distillation.representation is for text classification students; set its epochs "
                             "and weight to 0 for task.type `tabular`")
        if self.task.type == "tabular" and self.package.runtime != "torch":
            raise ValueError("package.runtime `onnx` serves text classification students; tabular students are "
                             "served with `torch`")
        if self.task.type != "tabular":
            if any(tabular_teacher) or self.student.kind in TABULAR_STUDENTS or getattr(self.data, "features", None) is not None \
                    or (self.synthesis is not None and self.synthesis.generator == "copula"):
                raise ValueError("gradient_boosting / logistic_regression teachers, student.kind `mlp`, "
                                 "data.features and generator `copula` are for task.type `tabular`")
            return self
        if not isinstance(self.data, DataSpec):
            raise ValueError("task.type `tabular` takes seed/pool/eval files in `data`")
        if not all(tabular_teacher):
            raise ValueError("task.type `tabular` needs a tabular teacher: teacher.kind `gradient_boosting` or "
                             "`logistic_regression`, or an ensemble of them")
        if self.student.kind not in TABULAR_STUDENTS:
            raise ValueError("task.type `tabular` needs student.kind `mlp`")
        if self.synthesis is not None and self.synthesis.generator != "copula":
            raise ValueError("task.type `tabular` synthesises profiles with generator `copula`")
        if self.data.features is not None and not (self.task.entity and self.task.timestamp):
            raise ValueError("data.features needs task.entity and task.timestamp (the entity rows' join key and "
                             "event time)")
        return self

    @model_validator(mode="after")
    def _task_fits(self) -> "Spec":
        if self.task.type == "tabular":
            return self
        reranking = self.task.type == "reranking"
        if reranking != isinstance(self.data, RankingDataSpec):
            raise ValueError("task.type `reranking` takes `data` in the BEIR layout (corpus, queries, qrels) and "
                             "classification takes seed/pool/eval files: make task.type and data agree")
        if reranking:
            if self.synthesis is not None and self.synthesis.generator == "augment":
                raise ValueError("re-ranking synthesis writes queries with a language model: use generator `llm` "
                                 "or `endpoint`")
            r = self.ranking
            student = r.teacher_architecture if r.student_architecture == "teacher" else r.student_architecture
            if r.embedding_epochs and (encoder_teacher(self.teacher) is None or r.teacher_architecture != "bi_encoder"
                                       or student != "bi_encoder" or self.student.kind == "monot5"):
                raise ValueError("ranking.embedding_epochs distils a bi-encoder teacher's embeddings into a "
                                 "bi-encoder student: use an encoder teacher with ranking.teacher_architecture "
                                 "`bi_encoder` and a bi-encoder student, or set ranking.embedding_epochs to 0")
        elif self.student.kind == "monot5":
            raise ValueError("student.kind `monot5` is a re-ranker: use it with task.type `reranking`")
        if self.distillation.representation.enabled:
            if reranking:
                raise ValueError("distillation.representation is for classification; a re-ranker learns its "
                                 "teacher's embeddings with ranking.embedding_epochs")
            if encoder_teacher(self.teacher) is None:
                raise ValueError("distillation.representation learns the teacher's sentence embeddings, and this "
                                 "teacher has no encoder: use an encoder teacher (or an ensemble with one), or "
                                 "set distillation.representation epochs and weight to 0")
        if self.package.runtime != "torch" and reranking:
            raise ValueError("package.runtime `onnx` serves classification students; re-ranking students are "
                             "served with `torch`")
        if reranking and self.student.vocabulary.prune:
            raise ValueError("student.vocabulary.prune is for classification students; re-ranking students keep "
                             "their vocabulary")
        return self

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, name: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", name):
            raise ValueError("use 1-63 lowercase letters, digits and '-', starting with a letter or digit")
        return name

    @property
    def model_name(self) -> str:
        return self.package.model_name or f"stillhouse-{self.name}"

    def spec_hash(self) -> str:
        """SHA-256 of the canonical JSON of the validated spec: the identity of this recipe.

        Where it runs is not part of the recipe: the same spec on the local launcher and on KubeRay, with any
        image, storage or pod settings or run folder, has one hash (``output_dir`` and
        ``runtime.DEPLOYMENT_FIELDS`` are left out).
        """
        recipe = self.model_dump(mode="json", exclude={"output_dir": True, "runtime": set(DEPLOYMENT_FIELDS)})
        canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


_TEACHER_TAG = re.compile(r"((?:^|\.)(?:teacher|members\.\d+))\.(?:encoder|llm|endpoint|ensemble|gradient_boosting|logistic_regression)(?=[.:])")


def _format_validation_error(err: ValidationError, origin: str) -> str:
    # `data` and each teacher are unions told apart by their fields or `kind`; the union's tag is not a field
    # the user wrote, so leave it out (`teacher.epoch`, not `teacher.encoder.epoch`).
    problems = [_TEACHER_TAG.sub(r"\1", re.sub(r"^(data|task)\.(classification|reranking|text|tabular)(\.|:)",
                                                r"\1\3", line))
                for line in validation_problems(err)]
    return "\n".join([f"invalid spec {origin}:", *(f"  {line}" for line in problems)])


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Make relative paths absolute against the spec's folder (leaves `package:` paths alone): the data files and
    ``output_dir`` (its default ``runs`` included: one rule for every path in a spec)."""
    output_dir = raw.get("output_dir", "runs")
    if isinstance(output_dir, str) and not Path(output_dir).is_absolute():
        raw["output_dir"] = str((base / output_dir).resolve())
    data = raw.get("data")
    if not isinstance(data, dict):
        return raw
    for key in ("corpus", "queries", "qrels", "candidates"):
        if isinstance(data.get(key), str) and not Path(data[key]).is_absolute():
            data[key] = str((base / data[key]).resolve())
    features = data.get("features")
    if isinstance(features, dict) and isinstance(features.get("repo"), str) and not Path(features["repo"]).is_absolute():
        features["repo"] = str((base / features["repo"]).resolve())
    for key in ("seed", "pool", "eval", "feedback"):
        source = data.get(key)
        if isinstance(source, str):
            source = data[key] = {"path": source}
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            path = source["path"]
            if not path.startswith("package:") and not Path(path).is_absolute():
                source["path"] = str((base / path).resolve())
    return raw


def parse_spec(text: str, base_dir: str | Path = ".", origin: str = "") -> Spec:
    """Parse and validate YAML spec text; relative data paths resolve against ``base_dir``."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"spec {origin} is not valid YAML: {exc}", "fix the YAML syntax at the line shown") from None
    if not isinstance(raw, dict):
        raise SpecError(f"spec {origin} must be a YAML mapping (name:, data:, teacher:, ...)",
                        "start from examples/quickstart.yaml")
    raw = _resolve_paths(raw, Path(base_dir))
    try:
        return Spec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(_format_validation_error(err, origin), "correct the fields listed above") from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a spec file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}", "pass the path of a YAML spec, e.g. examples/quickstart.yaml")
    return parse_spec(path.read_text(encoding="utf-8"), base_dir=path.parent.resolve(), origin=str(path))


def spec_from_json(text: str) -> Spec:
    """Rebuild a spec inside a pipeline step (paths are already absolute)."""
    return Spec.model_validate_json(text)


__all__ = [
    "AugmentSpec", "CostSpec", "FeaturesSpec", "GateSpec", "GradientBoostingTeacherSpec", "LogisticTeacherSpec",
    "ProfilesSpec", "ScenarioSpec", "TabularTaskSpec", "DataSource", "DataSpec", "DistillationSpec", "EncoderTeacherSpec", "EndpointSpec",
    "EndpointTeacherSpec", "EnsembleTeacherSpec", "EvaluationSpec", "LLMGeneratorSpec", "LLMTeacherSpec",
    "KubeRaySpec", "KubernetesSpec", "PackageSpec", "QuerySynthesisSpec", "RankingDataSpec", "RankingSpec", "RuntimeSpec", "SamplingSpec", "SeedChecks",
    "SoftLabelChecks", "Spec", "StudentSpec", "VocabularySpec", "RepresentationSpec",
    "SynthesisFilterSpec", "SynthesisSpec", "SyntheticChecks", "TaskSpec", "TeacherSpec", "TinyEncoderConfig",
    "ValidationSpec", "encoder_teacher", "load_spec", "parse_spec", "spec_from_json",
]
