"""Teacher vs distilled student vs hard-label student on the same held-out set.

Writes ``metrics.json`` (the numbers), ``report.html`` (plots, self-contained) and ``model_card.md``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from stillhouse import __version__
from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.data.io import atomic_dir, read_json, write_json
from stillhouse.data.prepare import PreparedData
from stillhouse.models.prune import vocabulary_figures
from stillhouse.distill.training import HISTORY_FILE
from stillhouse.evaluate.calibration import calibrate
from stillhouse.evaluate.classical import CLASSICAL_TITLE, TfidfBaseline, teacher_check
from stillhouse.evaluate.data_section import data_section
from stillhouse.evaluate.metrics import (
    accuracy,
    calibration_bins,
    classification_metrics,
    confusion_matrix,
    macro_f1,
    softmax,
)
from stillhouse.evaluate.model_card import render_model_card
from stillhouse.evaluate.report import MODEL_TITLES, render_report
from stillhouse.evaluate.speed import Timed, TimedLogits, measure_speeds
from stillhouse.evaluate.uncertainty import (
    bootstrap_interval,
    paired_difference,
    per_class,
)
from stillhouse.models.hf import count_parameters
from stillhouse.models.onnx_runtime import (
    RUNTIME_DIR,
    RUNTIME_FILES,
    conversion_figures,
    conversion_refusal,
    convert_classifier,
    deployed_runtime,
)
from stillhouse.progress import say
from stillhouse.spec import Spec
from stillhouse.models.classifier import encode_texts, load_classifier
from stillhouse.teachers.load import load_teacher

MODELS = ("teacher", "student", "baseline")


def size_on_disk(folder: str | Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def load_timed_classifier(folder: str) -> tuple[Timed, int, float]:
    """A classifier folder → (the model ready to time, its parameter count, its size on disk in MB)."""
    model, tokenizer, info = load_classifier(folder)
    return Timed(model, tokenizer, info.max_length), count_parameters(model), size_on_disk(folder) / 1e6


def _predict(timed: Timed | TimedLogits, texts: list[str]) -> np.ndarray:
    if isinstance(timed, TimedLogits):
        return timed.model.logits(texts)
    return encode_texts(timed.model, timed.tokenizer, texts, timed.max_length)


def _load_any(name: str, folder: str) -> tuple[Timed | TimedLogits, int | None, float | None]:
    """A model to evaluate: a classifier folder, or (teacher only) any teacher :func:`load_teacher` reads."""
    if name != "teacher" or (Path(folder) / "classifier.json").is_file():
        return load_timed_classifier(folder)
    teacher = load_teacher(folder)
    return TimedLogits(teacher), teacher.parameters, None


def quality_intervals(y: np.ndarray, pred: np.ndarray, labels: list[str], seed: int) -> dict:
    """95 % bootstrap intervals of accuracy and macro-F1, and the per-class figures, for one model."""
    return {"accuracy_ci95": list(bootstrap_interval(y, pred, accuracy, seed=seed)),
            "macro_f1_ci95": list(bootstrap_interval(y, pred, lambda t, p: macro_f1(t, p, len(labels)), seed=seed)),
            "per_class": per_class(y, pred, labels)}


def paired_comparisons(y: np.ndarray, preds: dict[str, np.ndarray], seed: int) -> dict:
    """Student − teacher and student − hard-label student accuracy with paired-bootstrap 95 % intervals."""
    return {"student_vs_teacher": paired_difference(y, preds["student"], preds["teacher"], accuracy, seed=seed),
            "student_vs_baseline": paired_difference(y, preds["student"], preds["baseline"], accuracy, seed=seed)}


def calibrations(spec: Spec, logits: dict[str, np.ndarray], y: np.ndarray) -> dict[str, dict]:
    """Temperature scaling of each model on the held-out rows (see :mod:`stillhouse.evaluate.calibration`)."""
    e = spec.evaluation
    return {name: calibrate(logits[name], y, e.calibration_bins, e.calibration_folds, spec.runtime.seed,
                            e.calibration) for name in logits}


def _disagreements(texts: list[str], y: np.ndarray, logits: dict, labels: list[str], limit: int = 8) -> list[dict]:
    """Held-out rows where the student and the teacher disagree, with gold and both answers (most confident
    student answers first: the clearest cases of what the student did not take from its teacher)."""
    student, teacher = softmax(logits["student"]), softmax(logits["teacher"])
    differ = np.flatnonzero(student.argmax(1) != teacher.argmax(1))
    order = differ[np.argsort(-student[differ].max(1))][:limit]
    return [{"text": texts[i], "gold": labels[y[i]], "teacher": labels[int(teacher[i].argmax())],
             "teacher_confidence": float(teacher[i].max()), "student": labels[int(student[i].argmax())],
             "student_confidence": float(student[i].max())} for i in order]


def _comparison(models: dict) -> dict:
    """Student against teacher in the same runtime (torch: the fair ratio) and, when the student is served in
    another runtime, as deployed (``deployed_*``: that runtime's student against the torch teacher)."""
    teacher, student, baseline = models["teacher"], models["student"], models["baseline"]
    out = {
        "student_retention": student["accuracy"] / teacher["accuracy"] if teacher["accuracy"] else None,
        "student_minus_baseline_accuracy": student["accuracy"] - baseline["accuracy"],
        "parameter_ratio": student["parameters"] / teacher["parameters"] if teacher["parameters"] else None,
        "size_ratio": student["size_mb"] / teacher["size_mb"] if teacher["size_mb"] else None,
        "speedup_batch1_p50": teacher["latency_ms_p50"] / student["latency_ms_p50"],
        "speedup_batch1_p95": teacher["latency_ms_p95"] / student["latency_ms_p95"],
        "throughput_ratio": student["throughput_per_s"] / teacher["throughput_per_s"],
    }
    runtime = student.get("runtime")
    if runtime:
        deployed = runtime["conversions"][runtime["deployed"]]
        out.update({
            "deployed_runtime": runtime["deployed"],
            "deployed_retention": deployed["accuracy"] / teacher["accuracy"] if teacher["accuracy"] else None,
            "deployed_size_ratio": deployed["size_mb"] / teacher["size_mb"] if teacher["size_mb"] else None,
            "deployed_speedup_batch1_p50": teacher["latency_ms_p50"] / deployed["latency_ms_p50"],
            "deployed_speedup_batch1_p95": teacher["latency_ms_p95"] / deployed["latency_ms_p95"],
            "deployed_throughput_ratio": deployed["throughput_per_s"] / teacher["throughput_per_s"],
        })
    return out


def convert_student(student: Timed, student_dir: str, runtime: str, folder: Path, texts: list[str], y: np.ndarray,
                    reference: np.ndarray, max_loss: float) -> tuple[dict, dict[str, TimedLogits]]:
    """Convert the torch student for serving in ``runtime`` and measure every conversion on the held-out rows:
    each against the model it was made from (``from``) and, overall, the deployed one against the torch
    student (``within_tolerance``: it loses at most ``max_loss`` accuracy, else the package step refuses it).
    Returns the figures (``models.student.runtime`` in metrics.json) and each converted model to time.
    A conversion's ``size_mb`` is what its runtime reads: the ONNX file and the tokenizer."""
    say(f"evaluate: converting the student to {runtime}; every conversion is measured on the held-out rows")
    converted = convert_classifier(student.model, student.tokenizer, student.max_length, folder, runtime)
    tokenizer_mb = size_on_disk(Path(student_dir) / "tokenizer") / 1e6
    conversions, previous, before = {}, "torch", reference
    for name, classifier in converted.items():
        after = classifier.logits(texts)
        conversions[name] = {"from": previous, **conversion_figures(y, before, after), "file": RUNTIME_FILES[name],
                             "size_mb": (folder / RUNTIME_FILES[name]).stat().st_size / 1e6 + tokenizer_mb}
        previous, before = name, after
    overall = conversion_figures(y, reference, before)
    figures = {"deployed": runtime, "accuracy": overall["accuracy"], "accuracy_change": overall["accuracy_change"],
               "agreement_with_torch": overall["agreement"], "max_accuracy_loss": max_loss,
               "within_tolerance": overall["accuracy_change"] >= -max_loss - 1e-12, "conversions": conversions}
    return figures, {name: TimedLogits(classifier) for name, classifier in converted.items()}


def _score_models(spec: Spec, data: PreparedData, texts: list[str], y: np.ndarray,
                  folders: dict[str, str]) -> tuple[dict, dict, dict]:
    """Each of teacher, student and baseline on the held-out rows: (logits, metrics, model to time)."""
    logits, models, timed = {}, {}, {}
    for name in MODELS:
        say(f"evaluate: {MODEL_TITLES[name]} on {len(texts)} held-out rows")
        timed[name], parameters, size_mb = _load_any(name, folders[name])
        logits[name] = _predict(timed[name], texts)
        reference = logits["teacher"].argmax(1) if name != "teacher" else None
        models[name] = {**classification_metrics(logits[name], y, spec.evaluation.calibration_bins, reference),
                        **quality_intervals(y, logits[name].argmax(1), data.labels, spec.runtime.seed),
                        "parameters": parameters, "size_mb": size_mb}
        if isinstance(timed[name], Timed) and timed[name].model.id_map is not None:  # a pruned vocabulary
            models[name]["vocabulary"] = vocabulary_figures(timed[name].model, timed[name].tokenizer, texts,
                                                            timed[name].max_length)
    return logits, models, timed


def _classical(spec: Spec, data: PreparedData, texts: list[str], y: np.ndarray, teacher_logits: np.ndarray,
               ) -> tuple[TimedLogits, np.ndarray, dict]:
    """TF-IDF + logistic regression fitted on the labelled seed rows: (model to time, logits, metrics)."""
    say(f"evaluate: {CLASSICAL_TITLE} fitted on the {len(data.seed)} labelled seed rows (the baseline a user would "
        "otherwise pick)")
    index = {label: i for i, label in enumerate(data.labels)}
    classical = TfidfBaseline.fit(data.seed["text"].tolist(), data.seed["label"].map(index).to_numpy(),
                                  len(data.labels), spec.runtime.seed)
    logits = classical.logits(texts)
    metrics = {**classification_metrics(logits, y, spec.evaluation.calibration_bins, teacher_logits.argmax(1)),
               **quality_intervals(y, logits.argmax(1), data.labels, spec.runtime.seed),
               "parameters": classical.parameters, "size_mb": classical.size_mb}
    return TimedLogits(classical), logits, metrics


def _time_models(spec: Spec, models: dict, timed: dict, converted: dict[str, TimedLogits], texts: list[str]) -> None:
    say("evaluate: timing the models (interleaved, CPU)")
    speeds = measure_speeds({**timed, **{f"student:{name}": t for name, t in converted.items()}}, texts,
                            spec.evaluation.latency_samples, spec.evaluation.throughput_batch_size)
    for name, model in models.items():
        model.update(speeds[name])
    for name in converted:
        models["student"]["runtime"]["conversions"][name].update(speeds[f"student:{name}"])


def _metrics_record(spec: Spec, data: PreparedData, texts: list[str], models: dict, comparison: dict, check: dict,
                    teacher_dir: str) -> dict:
    return {
        "run": spec.name, "task": spec.task.type, "spec_hash": spec.spec_hash(), "stillhouse_version": __version__,
        "eval_rows": len(texts), "labels": data.labels, "models": models, "comparison": comparison,
        "teacher_check": check,
        "recipe": spec.model_dump(mode="json", include={"teacher", "student", "distillation", "synthesis"}),
        "data": data.report, "teacher_fingerprint": dir_fingerprint(teacher_dir), "teacher": spec.teacher.describe(),
        "privacy_threshold": spec.validation.synthetic.min_seed_distance,
        "calibration": {"method": spec.evaluation.calibration, "fitted_on": "the held-out evaluation rows",
                        "figures_after": f"out-of-fold ({spec.evaluation.calibration_folds}-fold cross-fitting)",
                        "served_temperature": models["student"]["calibration"]["temperature"]},
    }


def _plots(spec: Spec, data: PreparedData, texts: list[str], y: np.ndarray, logits: dict, calibrated: dict,
           folders: dict[str, str]) -> dict:
    return {
        "calibration": {name: calibration_bins(softmax(logits[name]), y, spec.evaluation.calibration_bins)
                        for name in MODELS},
        "calibration_after": {name: calibrated[name]["bins_after"] for name in MODELS},
        "confusion": {name: confusion_matrix(y, logits[name].argmax(1), len(data.labels)).tolist() for name in MODELS},
        "disagreements": _disagreements(texts, y, logits, data.labels),
        "eval_label_counts": {label: int((y == i).sum()) for i, label in enumerate(data.labels)},
        "training_history": {name: read_json(Path(folder) / HISTORY_FILE)["epochs"] for name, folder in folders.items()
                             if (Path(folder) / HISTORY_FILE).is_file()},
    }


def _announce(metrics: dict) -> None:
    """The evaluation's summary lines on the console."""
    models, c, check = metrics["models"], metrics["comparison"], metrics["teacher_check"]
    say(f"evaluate: teacher acc {models['teacher']['accuracy']:.4f} | student {models['student']['accuracy']:.4f} "
          f"| hard-label student {models['baseline']['accuracy']:.4f} | {CLASSICAL_TITLE} "
          f"{models['classical']['accuracy']:.4f} | retention {c['student_retention']:.3f} "
          f"| speed-up x{c['speedup_batch1_p50']:.2f}")
    if "deployed_runtime" in c:
        r = models["student"]["runtime"]
        say(f"evaluate: student as deployed ({r['deployed']}): acc {r['accuracy']:.4f} "
            f"({r['accuracy_change'] * 100:+.2f} points against torch) | speed-up x{c['deployed_speedup_batch1_p50']:.2f}"
            + (f" | size {c['deployed_size_ratio']:.1%} of the teacher's" if c["deployed_size_ratio"] else ""))
        if not r["within_tolerance"]:
            problem, fix = conversion_refusal(r)
            say(f"evaluate: WARNING: {problem}; the package step will not store it: {fix}")
    if check["warning"]:
        say(f"evaluate: WARNING: {check['warning']}")
    cal = models["student"]["calibration"]
    say(f"evaluate: student ECE {cal['ece_before']:.4f} → {cal['ece_after']:.4f} with temperature scaling "
        f"(T={cal['temperature']:.2f}, {'served' if cal['applied'] else 'not applied: ' + cal['reason']})")


def evaluate_run(spec: Spec, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                 out_dir: str, synthetic_dir: str | None = None, soft_labels_dir: str | None = None) -> dict:
    """Evaluate the three models and write the evaluation folder; returns the metrics dict.

    ``synthetic_dir`` and ``soft_labels_dir`` feed the report's data section (validation, synthetic rows).
    """
    data = PreparedData.load(data_dir)
    texts = data.eval["text"].tolist()
    y = data.eval["label"].map({label: i for i, label in enumerate(data.labels)}).to_numpy()
    folders = {"teacher": teacher_dir, "student": student_dir, "baseline": baseline_dir}
    logits, models, timed = _score_models(spec, data, texts, y, folders)
    runtime = deployed_runtime(spec.package.runtime, spec.package.quantize)
    converted: dict[str, TimedLogits] = {}
    work = None
    if runtime != "torch":  # removed when done, or when the step fails (the object's finalizer)
        work = tempfile.TemporaryDirectory(prefix=".runtime-", dir=Path(out_dir).parent)
        models["student"]["runtime"], converted = convert_student(timed["student"], student_dir, runtime,
                                                                  Path(work.name), texts, y, logits["student"],
                                                                  spec.package.max_accuracy_loss)
    timed["classical"], logits["classical"], models["classical"] = _classical(spec, data, texts, y, logits["teacher"])
    calibrated = calibrations(spec, logits, y)
    for name, model in models.items():
        model["calibration"] = {k: v for k, v in calibrated[name].items() if k != "bins_after"}
    _time_models(spec, models, timed, converted, texts)
    comparison = {**_comparison(models), **paired_comparisons(y, {n: logits[n].argmax(1) for n in MODELS},
                                                              spec.runtime.seed)}
    check = teacher_check(y, {n: logits[n].argmax(1) for n in logits}, spec.runtime.seed)
    metrics = _metrics_record(spec, data, texts, models, comparison, check, teacher_dir)
    section = data_section(data, synthetic_dir, soft_labels_dir)
    metrics.update(synthesis=section["synthesis"], soft_labels=section["soft_labels"])
    plots = _plots(spec, data, texts, y, logits, calibrated, folders)
    with atomic_dir(out_dir) as tmp:
        write_json(tmp / "metrics.json", metrics)
        write_json(tmp / "plots.json", plots)
        (tmp / "report.html").write_text(render_report(metrics, plots, section), encoding="utf-8")
        (tmp / "model_card.md").write_text(render_model_card(spec, metrics), encoding="utf-8")
        if work is not None:  # what the package step copies into the student it stores
            shutil.copytree(work.name, tmp / RUNTIME_DIR)
    if work is not None:
        work.cleanup()
    _announce(metrics)
    return metrics
