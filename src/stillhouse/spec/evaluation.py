"""How the three models are compared on the held-out set, and how the served probabilities are calibrated."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stillhouse.spec.base import _Strict
from stillhouse.spec.tabular import GateSpec


class EvaluationSpec(_Strict):
    """How the three models are compared on the held-out set."""

    latency_samples: int = Field(100, gt=0, description="Single-input predictions timed for p50/p95 latency.")
    throughput_batch_size: int = Field(32, gt=0, description="Batch size for the throughput measurement.")
    calibration_bins: int = Field(15, gt=1, description="Bins for expected calibration error.")
    calibration: Literal["temperature", "none"] = Field(
        "temperature", description="Post-hoc calibration of the served probabilities: `temperature` fits one "
        "temperature per model on the held-out rows (cross-fitted for the reported figures; applied only when it "
        "lowers the out-of-fold NLL), `none` serves the model's own probabilities.")
    calibration_folds: int = Field(5, ge=2, le=20, description="Folds for cross-fitting the calibration figures.")
    gate: GateSpec = Field(GateSpec(), description="Task `tabular`: the promotion gate the student must pass; a "
                           "failing gate marks the run and the packaged model `gate: failed`.")
