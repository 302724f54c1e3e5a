"""Chains of specialist students: an ordered list of steps, each run only where an earlier step's answer says so.

Example (``examples/chain.yaml``)::

    name: complaint-triage
    steps:
      - {name: intent, model: banking-intent:latest}
      - {name: sentiment, model: sentiment:latest, when: {step: intent, labels: [complaint]}}
      - {name: urgency, model: urgency:latest, when: {step: intent, labels: [complaint], min_confidence: 0.5}}

Every text goes through the first step; ``sentiment`` and ``urgency`` run only on the texts that ``intent``
labelled ``complaint``. Steps whose conditions only look at finished steps run concurrently (here sentiment and
urgency), each on its own student service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from stillhouse.errors import ServeConfigError
from stillhouse.serve.config import README_SERVING, read_yaml_mapping
from stillhouse.spec.base import _Strict, validation_problems

CHAIN_ROUTE = "/classify"  # a chain answers as one classifier does, step by step

Predict = Callable[[str, list[str]], Awaitable[list[dict]]]


class StepCondition(_Strict):
    step: str = Field(description="An earlier step.")
    labels: list[str] = Field(min_length=1, description="Run only on texts that step labelled one of these.")
    min_confidence: float = Field(0.0, ge=0, le=1, description="…with at least this probability.")


class ChainStep(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,30}$", description="Step name (lower case, digits, `_`).")
    model: str = Field(description="BentoML model tag of the student.")
    when: StepCondition | None = Field(None, description="Absent: every text.")


class ChainSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    steps: list[ChainStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _order(self) -> ChainSpec:
        seen: set[str] = set()
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"step name `{step.name}` is used twice")
            if step.when is not None and step.when.step not in seen:
                raise ValueError(f"step `{step.name}` depends on `{step.when.step}`, which is not an earlier step")
            seen.add(step.name)
        return self

    def levels(self) -> list[list[ChainStep]]:
        """Steps grouped so that each group only depends on earlier groups (a group runs concurrently)."""
        depth: dict[str, int] = {}
        for step in self.steps:
            depth[step.name] = 0 if step.when is None else depth[step.when.step] + 1
        return [[s for s in self.steps if depth[s.name] == d] for d in range(max(depth.values()) + 1)]

    def check_labels(self, labels: dict[str, list[str]]) -> None:
        """Every condition names labels its step's student can output (``labels``: step → label list)."""
        for step in self.steps:
            if step.when is not None:
                unknown = sorted(set(step.when.labels) - set(labels[step.when.step]))
                if unknown:
                    raise ServeConfigError(
                        f"chain {self.name}: step `{step.name}` waits for label(s) {unknown} that step "
                        f"`{step.when.step}` never outputs", f"use some of {labels[step.when.step][:20]}")


def load_chain(path: str | Path) -> ChainSpec:
    try:
        return ChainSpec.model_validate(read_yaml_mapping(path, "chain spec"))
    except ValidationError as exc:
        raise ServeConfigError(f"chain spec {path}: {'; '.join(validation_problems(exc, README_SERVING))}",
                               "see the README's Chains paragraph under Serving") from None


def selected(step: ChainStep, outputs: dict[str, list[dict | None]], n: int) -> list[int]:
    """Indices of the texts ``step`` runs on, given earlier steps' per-text outputs (None = skipped there)."""
    if step.when is None:
        return list(range(n))
    earlier = outputs[step.when.step]
    return [i for i, out in enumerate(earlier) if out is not None and out["label"] in step.when.labels
            and out["confidence"] >= step.when.min_confidence]


async def run_chain(spec: ChainSpec, texts: list[str], predict: Predict) -> dict[str, list[dict | None]]:
    """Per step, one output per text (None where the step did not run). ``predict(step, texts)`` → outputs."""
    outputs: dict[str, list[dict | None]] = {}

    async def run(step: ChainStep) -> None:
        chosen = selected(step, outputs, len(texts))
        answers = await predict(step.name, [texts[i] for i in chosen]) if chosen else []
        results: list[dict | None] = [None] * len(texts)
        for i, answer in zip(chosen, answers):
            results[i] = answer
        outputs[step.name] = results

    for level in spec.levels():
        await asyncio.gather(*(run(step) for step in level))
    return {step.name: outputs[step.name] for step in spec.steps}
