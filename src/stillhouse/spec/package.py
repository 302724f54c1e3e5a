"""Where the student goes when it is done: its BentoML name and the runtime it is served with."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from stillhouse.spec.base import _Strict


class PackageSpec(_Strict):
    """Where the student goes when it is done."""

    model_name: str | None = Field(
        None, description="BentoML model name (default: `stillhouse-<name>`)."
    )
    runtime: Literal["torch", "onnx"] = Field(
        "torch", description="What the packaged student is served with: `torch`, or `onnx` (the student exported "
        "to ONNX and run by ONNX Runtime on the CPU; classification students). The evaluation measures the "
        "conversion's accuracy change and the latency in that runtime, and the package carries what was measured.")
    quantize: Literal["none", "int8"] = Field(
        "none", description="`int8`: dynamic int8 quantization of the ONNX student's weights (needs runtime "
        "`onnx`); its accuracy change is measured like the export's.")
    max_accuracy_loss: float = Field(
        0.01, ge=0, le=1, description="The most accuracy (a fraction: 0.01 = one point) the serving runtime may "
        "lose against the torch student on the held-out rows; a student converted with a larger loss is not "
        "packaged (the run fails at the package step, naming the loss).")

    @model_validator(mode="after")
    def _quantize_needs_onnx(self) -> "PackageSpec":
        if self.quantize != "none" and self.runtime != "onnx":
            raise ValueError("package.quantize `int8` quantizes the ONNX export: set package.runtime `onnx`, or "
                             "package.quantize `none`")
        return self

    @field_validator("model_name")
    @classmethod
    def _bentoml_name(cls, name: str | None) -> str | None:
        if name is not None and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
            raise ValueError("use lowercase letters, digits, '-', '_' and '.' (a BentoML model name)")
        return name
