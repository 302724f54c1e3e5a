"""Tasks: what Stillhouse distils, each one object with the same verbs (:class:`stillhouse.tasks.base.Task`).

The registry maps ``task.type`` to the module holding that task's object (``TASK``). The built-in tasks are
listed here; a task shipped as its own package registers under the entry-point group ``stillhouse.tasks``
(``name = "module"``). Modules are imported on first use only, so reading the registry costs nothing and
the spec can check a task name without importing any task's models.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path

from stillhouse.errors import SpecError

BUILTIN_TASKS = {
    "classification": "stillhouse.tasks.classification.task",
    "reranking": "stillhouse.tasks.reranking.task",
    "tabular": "stillhouse.tasks.tabular.task",
}
ENTRY_POINT_GROUP = "stillhouse.tasks"


def task_modules() -> dict[str, str]:
    """Every registered task name → the module holding its ``TASK``; built-ins win over entry points."""
    plugins = {point.name: point.value for point in entry_points(group=ENTRY_POINT_GROUP)}
    return {**plugins, **BUILTIN_TASKS}


def known_tasks() -> list[str]:
    return sorted(task_modules())


def unknown_task_message(name: str) -> str:
    return f"unknown task type `{name}`; known task types: {', '.join(known_tasks())}"


def task_for(name: str):
    """The task object registered as ``name`` (a :class:`stillhouse.tasks.base.Task`)."""
    module = task_modules().get(name)
    if module is None:
        raise SpecError(unknown_task_message(name), "set task.type to one of the known task types")
    return importlib.import_module(module).TASK


def task_of_folder(folder) -> str | None:
    """The registered task whose student file (its ``serving.student_file``) ``folder`` holds, or None: what a
    student stored before the registry labelled it with its task is. Imports every task's module."""
    for name in known_tasks():
        if (Path(folder) / task_for(name).serving.student_file).is_file():
            return name
    return None
