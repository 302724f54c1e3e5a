"""Versioned students with lineage, on the BentoML model store (``$BENTOML_HOME``, default ``~/bentoml``).

Each packaged student is a BentoML model whose folder holds ``student/`` (the classifier folder),
``metrics.json`` and ``model_card.md``; its labels and metadata carry the lineage: spec hash, data and
teacher fingerprints, code version. Serving loads it back by tag.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from stillhouse import __version__
from stillhouse.data.io import read_json
from stillhouse.errors import ModelError, SpecError
from stillhouse.evaluate.model_card import stamp_tag
from stillhouse.models.onnx_runtime import ONNX_FILE, RUNTIME_DIR, conversion_refusal
from stillhouse.spec import Spec
from stillhouse.tasks import task_for, task_of_folder

FRAMEWORK_LABEL = "stillhouse"


def code_version() -> str:
    """The package version, plus the git commit when running from a checkout."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def save_student(spec: Spec, data_dir: str, teacher_dir: str, student_dir: str, evaluation_dir: str) -> str:
    """Copy the student and its evaluation into a new BentoML model version; return its tag."""
    metrics = read_json(Path(evaluation_dir) / "metrics.json")
    student = metrics["models"]["student"]
    runtime = student.get("runtime")  # the student was measured in another runtime: package that one
    if runtime and not runtime.get("within_tolerance", True):
        problem, fix = conversion_refusal(runtime)
        raise ModelError(f"{problem}: not packaged", fix)
    metadata = {
        "spec_hash": metrics["spec_hash"], "teacher_fingerprint": metrics["teacher_fingerprint"],
        "teacher": spec.teacher.describe(), "code_version": code_version(),
        "data_fingerprints": metrics["data"]["fingerprints"],
    }
    metadata.update(task_for(spec.task.type).lineage(spec, metrics))
    labels = {"run": spec.name}
    if "gate" in metrics:  # a student that failed the promotion gate is stored, and says so where it is listed
        labels["gate"] = metrics["gate"]["verdict"]
    files = {name: Path(evaluation_dir) / name for name in ("metrics.json", "model_card.md", "report.html")}
    calibration = student.get("calibration")
    if calibration:
        metadata["temperature"] = calibration["temperature"]
    runtime_file = None
    if runtime:
        runtime_file = Path(evaluation_dir) / RUNTIME_DIR / runtime["conversions"][runtime["deployed"]]["file"]
        if not runtime_file.is_file():
            raise ModelError(f"the evaluation measured the student in {runtime['deployed']}, but "
                             f"{RUNTIME_DIR}/{runtime_file.name} is not in its folder",
                             "re-run the evaluate step (its folder is written whole or not at all)")
        labels["runtime"] = runtime["deployed"]
        metadata["deployed_accuracy"] = runtime["accuracy"]
    return store_classifier(spec.model_name, _judged_student(student_dir, metrics), files, labels, metadata,
                            task=spec.task.type, leave_out=metrics.get("other_models", []),
                            temperature=calibration["temperature"] if calibration else None,
                            runtime_file=runtime_file)


def _judged_student(student_dir: str, metrics: dict) -> str:
    """The model of the student folder the evaluation judged: the folder itself, or the subfolder it names (a
    tabular run's frontier packages the setting it chose)."""
    root = Path(student_dir).resolve()
    folder = (root / metrics.get("student_folder", ".")).resolve()
    if not folder.is_relative_to(root) or not folder.is_dir():
        raise ModelError(f"the evaluation names student folder `{metrics.get('student_folder')}`, which is not in "
                         f"{student_dir}", "re-run the distill and evaluate steps of the same run")
    return str(folder)


def storable(value):
    """``value`` as BentoML model metadata accepts it (basic types only, no None anywhere): a None entry of a
    mapping is left out (metrics.json beside the model keeps it), a None item of a list becomes ``"null"`` (so
    positions hold)."""
    if isinstance(value, dict):
        return {str(k): storable(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return ["null" if v is None else storable(v) for v in value]
    return value


def store_classifier(name: str, classifier_dir: str | Path, files: dict[str, Path] | None = None,
                     labels: dict | None = None, metadata: dict | None = None, task: str | None = None,
                     temperature: float | None = None, runtime_file: Path | None = None,
                     leave_out: list[str] = ()) -> str:
    """A new BentoML model version ``name`` holding any task's student folder as ``student/`` (what serving
    loads) and ``files`` beside it; return its tag. ``temperature`` (the fitted calibration) is recorded in the
    stored copy by the task (:meth:`set_temperature`), so serving divides the logits by it.
    ``runtime_file`` (an ONNX export the evaluation measured) goes in as ``student/model.onnx``, which serving
    then runs instead of the torch weights (kept beside it: a packaged student can teach or be re-distilled).
    ``task`` (the ``task`` label serving reads) defaults to the registered task whose student file the folder
    holds."""
    import bentoml

    task = task or task_of_folder(classifier_dir)
    labels = {k: v for k, v in {"framework": FRAMEWORK_LABEL, "task": task, **(labels or {})}.items() if v is not None}
    with bentoml.models.create(name, labels=labels,
                               metadata=storable(metadata or {})) as model:
        target = Path(model.path)
        # leave_out: top-level entries of the folder that hold other models (a frontier's other settings)
        shutil.copytree(classifier_dir, target / "student",
                        ignore=lambda folder, names: [n for n in names if n in leave_out
                                                      and Path(folder) == Path(classifier_dir)])
        if runtime_file is not None:
            shutil.copy2(runtime_file, target / "student" / ONNX_FILE)
        if temperature is not None:
            task_for(task).set_temperature(str(target / "student"), temperature)
        for filename, source in (files or {}).items():
            shutil.copy2(source, target / filename)
            if filename in ("model_card.md", "report.html"):  # written before the tag existed: fill it in
                path = target / filename
                path.write_text(stamp_tag(path.read_text(encoding="utf-8"), str(model.tag), code_version(),
                                          html=filename.endswith(".html")),
                                encoding="utf-8")
    return str(model.tag)


def _quality(task_name: str, metadata: dict) -> tuple[str, float] | None:
    """The task's first headline figure as stored (its title, its value), or None (a task no longer installed)."""
    try:
        task = task_for(task_name)
    except SpecError:
        return None
    value = metadata.get(task.headline[0])
    return (task.headline_title, value) if value is not None else None


def list_students() -> list[dict]:
    """Packaged students in the local model store, newest first."""
    import bentoml

    rows = []
    for model in bentoml.models.list():
        info = model.info
        if info.labels.get("framework") != FRAMEWORK_LABEL:
            continue
        task = info.labels.get("task") or task_of_folder(Path(model.path) / "student") or ""
        rows.append({"tag": str(model.tag), "created": info.creation_time.strftime("%Y-%m-%d %H:%M:%S"),
                     "run": info.labels.get("run", ""), "quality": _quality(task, info.metadata),
                     "gate": info.labels.get("gate", ""), "task": task,
                     "runtime": info.labels.get("runtime", "torch"),
                     "retention": info.metadata.get("retention"), "spec_hash": info.metadata.get("spec_hash", "")[:12],
                     "path": model.path})
    return sorted(rows, key=lambda r: r["created"], reverse=True)
