"""The shape every task has: one verb per pipeline step, each reading and writing folders.

:mod:`stillhouse.steps` loads the spec, asks the registry (:func:`stillhouse.tasks.task_for`) for
``spec.task.type`` and calls the verb; it knows no task by name. Serving, the registry and the CLI ask the task the
same way (``serving``, ``headline``, ``lineage``). A task owns its data layout, its teacher and
student models, its soft labels, its metrics and what the registry records of them; the verbs shared by every
task live below it (``distill/fit.py`` trains any model on the launcher, ``data/io.py`` writes atomically).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from stillhouse.spec import Spec

if TYPE_CHECKING:  # annotations only: the serving module needs no task loaded to be read
    from stillhouse.serve.student import Serving


class Task(Protocol):
    name: ClassVar[str]
    # metrics.json keys per model that the Kubeflow run's Metrics view, `models list` and the registry show
    headline: ClassVar[tuple[str, ...]]
    # how `models list` titles the first headline figure (e.g. "acc")
    headline_title: ClassVar[str]
    # metrics.json["comparison"] key of the student's share of the teacher's headline metric
    retention: ClassVar[str]
    # how its packaged students are served: the student file, the service and its route, the route's request
    # check and response schema, and the loader of the task's own served student (stillhouse.serve.student)
    serving: ClassVar[Serving]

    def prepare(self, spec: Spec, out_dir: str, validation_dir: str | None) -> dict:
        """Read, check, split and validate the data into the step's folder; return its counts."""

    def teacher(self, spec: Spec, data_dir: str, out_dir: str) -> dict:
        """Train, prompt or assemble the teacher into ``out_dir``."""

    def synthesize(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        """Generate, teacher-label, filter and validate synthetic rows (an empty folder when synthesis is off)."""

    def soft_label(self, spec: Spec, data_dir: str, teacher_dir: str, synthetic_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        """The teacher's soft labels for the training rows, checked by a Great Expectations suite."""

    def distill(self, spec: Spec, data_dir: str, teacher_dir: str, soft_labels_dir: str, synthetic_dir: str,
                out_dir: str) -> dict:
        """Train the student on the soft labels (and the seed's hard labels)."""

    def baseline(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
        """The same student on the seed's hard labels alone: what distillation must beat."""

    def evaluate(self, spec: Spec, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                 out_dir: str, synthetic_dir: str | None, soft_labels_dir: str | None) -> dict:
        """metrics.json, report.html and model_card.md comparing teacher, student and baseline."""

    def set_temperature(self, folder: str, temperature: float) -> None:
        """Record the calibration temperature fitted at evaluation in a stored copy of the student, so serving
        divides its logits by it (tasks whose evaluation fits none are never asked)."""

    def lineage(self, spec: Spec, metrics: dict) -> dict:
        """What the registry records of a packaged student beside the shared lineage (its headline figures)."""
