"""The distillation spec: one YAML file describes a whole run, validated before anything runs.

Load with :func:`load_spec` (a file) or :func:`parse_spec` (YAML text). Relative data paths are resolved
against the spec file's folder so a spec can travel with its data. A bad spec raises :class:`SpecError`
whose message names every offending field path (``data.seed.path``) and the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from stillhouse.errors import SpecError
from stillhouse.spec.base import EndpointSpec, _Strict, check_slug, validation_problems
from stillhouse.spec.evaluation import EvaluationSpec
from stillhouse.spec.data import DataSource, DataSpec, SamplingSpec
from stillhouse.spec.package import PackageSpec
from stillhouse.spec.ranking import RankingDataSpec, RankingSpec
from stillhouse.spec.task import RerankingTaskSpec, TaskSpec
from stillhouse.spec.runtime import (
    DEPLOYMENT_FIELDS,
    KubeRaySpec,
    KubernetesSpec,
    RuntimeSpec,
)
from stillhouse.spec.tabular import (
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


#: Each task's ``task:`` section by task name (the spec's task registry); other registered tasks take TaskSpec.
TASK_SECTIONS = {"reranking": RerankingTaskSpec, "tabular": TabularTaskSpec}
#: The ``data:`` layouts a task section can name (its ``data_layout``).
DATA_LAYOUTS = {"files": DataSpec, "beir": RankingDataSpec}
# The layout the task being validated reads: set while a spec is validated (Spec._in_task_layout), read by the
# data union's discriminator, which sees only the `data` value.
_DATA_LAYOUT: ContextVar[str] = ContextVar("stillhouse_data_layout", default="files")


def _refuse_other_layout(value, layout: str) -> None:
    """A `data` section written for another task's layout gets one message saying so, not a field list."""
    if not isinstance(value, dict):
        return
    own = DATA_LAYOUTS[layout]
    for model in DATA_LAYOUTS.values():
        if model is not own and set(value) & set(model.model_fields) and not set(value) & set(own.model_fields):
            raise ValueError(f"`data` is in the {model.layout} layout, and this task.type reads {own.layout}: "
                             "make task.type and data agree")


def _task_section(value) -> str:
    name = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return name if name in TASK_SECTIONS else "text"


def _data_layout(value) -> str:
    for layout, model in DATA_LAYOUTS.items():
        if isinstance(value, model):
            return layout
    return _DATA_LAYOUT.get()


TaskSection = Annotated[Annotated[TaskSpec, Tag("text")] | Annotated[RerankingTaskSpec, Tag("reranking")]
                        | Annotated[TabularTaskSpec, Tag("tabular")], Discriminator(_task_section)]
DataSection = Annotated[Annotated[DataSpec, Tag("files")] | Annotated[RankingDataSpec, Tag("beir")],
                        Discriminator(_data_layout)]


def _task_type(raw) -> str | None:
    task = raw.get("task") if isinstance(raw, dict) else None
    return task.get("type") if isinstance(task, dict) else getattr(task, "type", None)


def _legacy_sections(raw: dict) -> dict:
    """Specs written before each task section held its task's own settings (every run folder's spec.yaml, submit
    parameters, hand-written specs) keep loading. Their top-level ``ranking:`` goes into the task section that has
    those settings (with a warning to move it); for another task it never applied and is dropped (with a warning
    if it held anything but the defaults every old dump wrote). The text task's fields that an old dump wrote, at
    their defaults, into a section that has no such field are dropped too."""
    task = raw.get("task")
    task = dict(task) if isinstance(task, dict) else None
    section = TASK_SECTIONS.get(_task_type(raw), TaskSpec)
    ranking = raw.get("ranking")
    if isinstance(ranking, dict):
        raw = {k: v for k, v in raw.items() if k != "ranking"}
        if set(ranking) <= set(section.model_fields):
            warnings.warn("the spec's top-level `ranking:` section is deprecated: move its fields into `task:` "
                          "(beside `type: reranking`); this spec is read as if they were there", FutureWarning,
                          stacklevel=5)
            task = {**ranking, **(task or {})}
        elif any(k not in RankingSpec.model_fields or RankingSpec.model_fields[k].default != v
                 for k, v in ranking.items()):
            warnings.warn("the spec's top-level `ranking:` section applies to task.type `reranking` only; it is "
                          "ignored here: remove it", FutureWarning, stacklevel=5)
    if task is not None:
        task = {k: v for k, v in task.items() if k in section.model_fields or k not in TaskSpec.model_fields
                or TaskSpec.model_fields[k].default != v}
        raw = {**raw, "task": task}
    return raw


class Spec(_Strict):
    """A whole distillation run."""

    name: str = Field(description="Run name; runs land in `<output_dir>/<name>/<timestamp>/`.")
    description: str = Field("", description="One line on the intended use (goes into the model card).")
    task: TaskSection = Field(TaskSpec(), description="`type: classification` (default, TaskSpec), `reranking` "
                              "(RerankingTaskSpec) or `tabular` (TabularTaskSpec), or a task registered by a "
                              "plugin; with the task's own settings.")
    data: DataSection = Field(description="Seed/pool/eval files (classification), or a BEIR-layout set (reranking).")
    teacher: TeacherSpec = Field(description="`kind: encoder` (default), `llm`, `endpoint` or `ensemble`.")
    student: StudentSpec = StudentSpec()
    distillation: DistillationSpec = DistillationSpec()
    synthesis: SynthesisSpec | None = Field(None, description="Synthetic data (off when absent).")
    evaluation: EvaluationSpec = EvaluationSpec()
    validation: ValidationSpec = ValidationSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    package: PackageSpec = PackageSpec()
    output_dir: str = Field("runs", description="Folder for run folders (relative to the spec's folder, like every "
                            "path in a spec).")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, raw):
        """The task's own defaults of other sections (e.g. tabular's `distillation`), written into the spec."""
        if not isinstance(raw, dict):
            return raw
        raw = _legacy_sections(raw)
        return TASK_SECTIONS.get(_task_type(raw), TaskSpec).spec_defaults(raw)

    @model_validator(mode="wrap")
    @classmethod
    def _in_task_layout(cls, raw, handler):
        """`data` is read in the layout of the task the spec names (also when the task section has an error of its
        own), never guessed from its keys."""
        token = _DATA_LAYOUT.set(TASK_SECTIONS.get(_task_type(raw), TaskSpec).data_layout)
        try:
            return handler(raw)
        finally:
            _DATA_LAYOUT.reset(token)

    @field_validator("data", mode="before")
    @classmethod
    def _data_of_task(cls, value):
        _refuse_other_layout(value, _DATA_LAYOUT.get())
        return value

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_kind(cls, teacher):
        return _with_kind(teacher)

    @model_validator(mode="after")
    def _fits_task(self) -> "Spec":
        self.task.check_spec(self)
        return self

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, name: str) -> str:
        return check_slug(name)

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
    problems = [_TEACHER_TAG.sub(r"\1", re.sub(r"^(data|task)\.(files|beir|text|reranking|tabular)(\.|:)",
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
    "ProfilesSpec", "RerankingTaskSpec", "ScenarioSpec", "TabularTaskSpec", "DataSource", "DataSpec", "DistillationSpec", "EncoderTeacherSpec", "EndpointSpec",
    "EndpointTeacherSpec", "EnsembleTeacherSpec", "EvaluationSpec", "LLMGeneratorSpec", "LLMTeacherSpec",
    "KubeRaySpec", "KubernetesSpec", "PackageSpec", "QuerySynthesisSpec", "RankingDataSpec", "RankingSpec", "RuntimeSpec", "SamplingSpec", "SeedChecks",
    "SoftLabelChecks", "Spec", "StudentSpec", "VocabularySpec", "RepresentationSpec",
    "SynthesisFilterSpec", "SynthesisSpec", "SyntheticChecks", "TaskSpec", "TeacherSpec", "TinyEncoderConfig",
    "ValidationSpec", "encoder_teacher", "load_spec", "parse_spec", "spec_from_json",
]
