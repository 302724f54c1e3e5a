"""What serving asks of every task: its :class:`Serving` description and a :class:`ServedStudent` subclass.

The registry (:mod:`stillhouse.registry`) stores a student as a BentoML model whose ``student/`` folder holds the
task's own files and whose ``task`` label names the task. Serving (:mod:`stillhouse.serve.stored`) looks that task
up and reads its :class:`Serving`: the BentoML service that answers the task's one route, the route's request check
and response schema, and how to load the student into the task's own :class:`ServedStudent` subclass. Nothing here
knows a task by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from stillhouse.errors import ServeConfigError

STUDENT_FOLDER = "student"  # the folder of a stored model that holds the student itself


def refuse_passages(config) -> None:
    """The serving-config check of every task that has no passage store."""
    if config.passages:
        raise ServeConfigError("`passages` is for re-rankers, and this student is not one",
                               "leave `passages` out of the serving config")


@dataclass(frozen=True)
class Serving:
    """How a task's packaged students are served (a task's ``serving``)."""

    student_file: str  # the file in a packaged student's folder that makes it this task's (e.g. classifier.json)
    route: str  # the one route the task's service answers beside /feedback
    service: str  # that BentoML service, ``module:Class``
    check: Callable  # the route's request check: (body, LimitsConfig) → CheckedRequest (stillhouse.serve.schemas)
    response: type  # the route's response schema (pydantic)
    load: Callable[[object], "ServedStudent"]  # a stored BentoML model → the task's served student
    labels: Callable[[Path], list[str]]  # a student folder's labels, without loading its weights
    check_config: Callable[[object], None] = refuse_passages  # serving-config checks at `stillhouse serve`
    chainable: bool = False  # answers labels a chain step can route on


@dataclass
class ServedStudent:
    """What every served student has; a task's subclass adds its verb (``predict``, ``score``, ``score_rows``)."""

    tag: str
    version: str
    labels: list[str]
    metadata: dict = field(default_factory=dict)  # the stored model's lineage
    task = ""  # the registered task's name (the subclass's)

    def warm_up(self, texts: list[str]) -> None:
        """One call before the first client's, so it pays tokenizer and allocator set-up, not a user."""

    def describe(self) -> dict:
        """What the public front needs of the student (the model service's ``describe``)."""
        return {"tag": self.tag, "version": self.version, "labels": self.labels, "task": self.task}


def stored_identity(stored) -> dict:
    """The fields every :class:`ServedStudent` takes from a stored BentoML model."""
    return {"tag": str(stored.tag), "version": stored.tag.version or "", "metadata": dict(stored.info.metadata)}
