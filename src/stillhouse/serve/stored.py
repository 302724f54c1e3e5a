"""Packaged students in the BentoML model store, found by tag and loaded as their task's served student."""

from __future__ import annotations

from pathlib import Path

import bentoml
from bentoml.exceptions import BentoMLException

from stillhouse.errors import ModelError
from stillhouse.serve.student import STUDENT_FOLDER, ServedStudent
from stillhouse.tasks import known_tasks, task_for, task_of_folder


def _task_name(stored) -> str | None:
    """The task of a stored model: its ``task`` label, or (stored before the registry wrote one) the registered
    task whose student file its folder holds; None when neither."""
    folder = Path(stored.path) / STUDENT_FOLDER
    label = stored.info.labels.get("task")
    if not label:
        return task_of_folder(folder)
    known = label in known_tasks() and (folder / task_for(label).serving.student_file).is_file()
    return label if known else None


def check_tag(tag: str):
    """The stored BentoML model ``tag`` (``name`` alone or ``name:latest`` = newest), or a clear error."""
    try:
        stored = bentoml.models.get(tag)
    except BentoMLException:  # NotFound, or a malformed tag
        raise ModelError(f"no model `{tag}` in the BentoML model store",
                         "`stillhouse models list` shows the packaged students; run a distillation first") from None
    if _task_name(stored) is None:
        raise ModelError(f"model `{tag}` is not a packaged Stillhouse student (no student/ folder)",
                         "serve a tag written by `stillhouse run`")
    return stored


def task_of(tag: str):
    """The registered task (:class:`stillhouse.tasks.base.Task`) of the stored student ``tag``."""
    return task_for(_task_name(check_tag(tag)))


def labels_of(tag: str) -> list[str]:
    """The labels of the stored student ``tag`` (none for a re-ranker), without loading its weights."""
    stored = check_tag(tag)
    return task_for(_task_name(stored)).serving.labels(Path(stored.path) / STUDENT_FOLDER)


def load_student(tag: str) -> ServedStudent:
    """Load the student with BentoML model tag ``tag`` as its task's served student."""
    stored = check_tag(tag)
    return task_for(_task_name(stored)).serving.load(stored)

