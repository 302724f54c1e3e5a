"""The pipeline's steps as library functions: one per KFP component, each reading and writing folders.

Components in ``components/`` call exactly one of these through :func:`run_step`, which turns a user error
into one line on the step's output (picked up by ``stillhouse run``) and a non-zero exit, with no traceback.
Each step loads the spec and hands the work to the task registered for ``task.type``
(:mod:`stillhouse.tasks`); no step knows a task by name. Every step writes its output atomically: a failed
step leaves no artifact behind.
"""

from __future__ import annotations

import sys
from typing import Callable

from stillhouse.data.io import atomic_file
from stillhouse.errors import ERROR_MARKER, StillhouseError
from stillhouse.progress import say
from stillhouse.registry import save_student
from stillhouse.spec import Spec, spec_from_json
from stillhouse.tasks import task_for

__all__ = ["ERROR_MARKER", "distill_student_step", "evaluate_step", "headline_metrics", "package_step",
           "prepare_step", "run_step", "soft_label_step", "synthesize_step", "train_baseline_step",
           "train_teacher_step"]


def run_step(step_name: str, func: Callable, **kwargs):
    """Run a step; a :class:`StillhouseError` becomes marked output lines and exit status 1."""
    try:
        return func(**kwargs)
    except StillhouseError as err:
        for line in str(err).splitlines():
            print(f"{ERROR_MARKER} {step_name}: {line}", flush=True)
        sys.stdout.flush()
        raise SystemExit(1) from None


def _load(spec_json: str) -> tuple[Spec, object]:
    spec = spec_from_json(spec_json)
    return spec, task_for(spec.task.type)


def prepare_step(spec_json: str, out_dir: str, validation_dir: str | None = None) -> dict:
    """Read, check, split and validate (GE seed suite) the data."""
    spec, task = _load(spec_json)
    return task.prepare(spec, out_dir, validation_dir)


def train_teacher_step(spec_json: str, data_dir: str, out_dir: str) -> dict:
    """The teacher: a fine-tuned model, a prompted LLM (local or endpoint), or an ensemble of them."""
    spec, task = _load(spec_json)
    return task.teacher(spec, data_dir, out_dir)


def synthesize_step(spec_json: str, data_dir: str, teacher_dir: str, out_dir: str,
                    validation_dir: str | None = None) -> dict:
    """Generate, teacher-label, filter and validate synthetic rows (an empty folder when synthesis is off)."""
    spec, task = _load(spec_json)
    return task.synthesize(spec, data_dir, teacher_dir, out_dir, validation_dir)


def soft_label_step(spec_json: str, data_dir: str, teacher_dir: str, synthetic_dir: str, out_dir: str,
                    validation_dir: str | None = None) -> dict:
    """The teacher's soft labels for the training rows → GE soft-label suite."""
    spec, task = _load(spec_json)
    return task.soft_label(spec, data_dir, teacher_dir, synthetic_dir, out_dir, validation_dir)


def distill_student_step(spec_json: str, data_dir: str, teacher_dir: str, soft_labels_dir: str,
                         synthetic_dir: str, out_dir: str) -> dict:
    """The student on the soft labels (and the seed's hard labels), on the spec's launcher."""
    spec, task = _load(spec_json)
    return task.distill(spec, data_dir, teacher_dir, soft_labels_dir, synthetic_dir, out_dir)


def train_baseline_step(spec_json: str, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
    """The same student, trained on the seed's hard labels only: what distillation must beat."""
    spec, task = _load(spec_json)
    return task.baseline(spec, data_dir, teacher_dir, out_dir)


def evaluate_step(spec_json: str, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                  out_dir: str, synthetic_dir: str | None = None, soft_labels_dir: str | None = None) -> dict:
    """Compare teacher, student and baseline → metrics.json, report.html (with the data section), model_card.md."""
    spec, task = _load(spec_json)
    return task.evaluate(spec, data_dir, teacher_dir, student_dir, baseline_dir, out_dir, synthetic_dir,
                         soft_labels_dir)


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The evaluation's numbers a Kubeflow run shows in its Metrics view (``model_key`` → value): the headline
    metrics of the task that wrote ``metrics``."""
    task = task_for(metrics["task"])
    out = {f"{model}_{key}".replace("@", "_at_"): float(values[key]) for model, values in metrics["models"].items()
           for key in task.headline if values.get(key) is not None}
    out["student_retention"] = float(metrics["comparison"][task.retention])
    return out


def package_step(spec_json: str, data_dir: str, teacher_dir: str, student_dir: str, evaluation_dir: str,
                 out_path: str) -> str:
    """Save the student with its lineage to the BentoML model store; returns the model tag."""
    tag = save_student(spec_from_json(spec_json), data_dir, teacher_dir, student_dir, evaluation_dir)
    with atomic_file(out_path) as handle:
        handle.write(tag + "\n")
    say(f"packaged student: {tag}")
    return tag
