"""The pipeline's steps as library functions: one per KFP component, each reading and writing folders.

Components in ``components/`` call exactly one of these through :func:`run_step`, which turns a user error
into one line on the step's output (picked up by ``stillhouse run``) and a non-zero exit, with no traceback.
Every step writes its output atomically: a failed step leaves no artifact behind.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from stillhouse.cluster.launcher import launcher_for
from stillhouse.data.io import atomic_dir, atomic_file, write_json
from stillhouse.data.prepare import PreparedData, prepare_data
from stillhouse.distill.soft_labels import (SOFT_LABELS_FILE, attach_teacher_logits, read_soft_labels,
                                           soft_label_table, write_soft_labels)
from stillhouse.distill.student import build_student
from stillhouse.distill.training import HISTORY_FILE, load_training_history, TrainJob, load_trained_state
from stillhouse.errors import StillhouseError
from stillhouse.progress import say
from stillhouse.spec import EncoderTeacherSpec, Spec, spec_from_json
from stillhouse.tasks.classification import ClassifierInfo, load_classifier, save_classifier
from stillhouse.teachers.encoder import init_teacher

ERROR_MARKER = "[stillhouse] error:"

# The hard-label baseline sees only the seed set; it gets as many optimiser steps as the distilled student
# (more epochs over fewer rows), capped so a tiny seed does not mean hundreds of epochs.
_BASELINE_MAX_EPOCHS = 30


def run_step(step_name: str, func: Callable, **kwargs):
    """Run a step; a :class:`StillhouseError` becomes marked output lines and exit status 1."""
    try:
        return func(**kwargs)
    except StillhouseError as err:
        for line in str(err).splitlines():
            print(f"{ERROR_MARKER} {step_name}: {line}", flush=True)
        sys.stdout.flush()
        raise SystemExit(1) from None


def _reranking(spec: Spec) -> bool:
    return spec.task.type == "reranking"


def _device(spec: Spec) -> str:
    return "cuda" if spec.runtime.use_gpu and torch.cuda.is_available() else "cpu"


def prepare_step(spec_json: str, out_dir: str, validation_dir: str | None = None) -> dict:
    """Read, check, sample and validate (GE seed suite) the data into seed/pool/eval (see
    :mod:`stillhouse.data.prepare`, and :mod:`stillhouse.data.prepare_ranking` for re-ranking)."""
    spec = spec_from_json(spec_json)
    if _reranking(spec):
        from stillhouse.data.prepare_ranking import prepare_ranking

        report = prepare_ranking(spec, out_dir, validation_dir).report
        say(f"data: {report['counts']} queries; first stage: {report['first_stage']}; seed suite passed")
        return report["counts"]
    data = prepare_data(spec, out_dir, validation_dir)
    say(f"data: {data.report['counts']}; seed suite passed")
    return data.report["counts"]


def _label_idx(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return frame["label"].map(index).to_numpy(dtype=np.int64)


def train_on_launcher(spec: Spec, name: str, model, tokenizer, info, rows: pd.DataFrame, out_dir: str, *,
                      epochs: int, batch_size: int, lr: float, head_lr: float, freeze_embeddings: bool,
                      alpha: float = 1.0, temperature: float = 1.0, save: Callable = save_classifier,
                      **job_fields) -> None:
    """Save the initial model (``save``: the task's model writer), run a TrainJob on the launcher, save the
    trained model to ``out_dir``. ``job_fields`` are further :class:`TrainJob` fields (the re-ranking ones)."""
    work = Path(out_dir).parent / f"{Path(out_dir).name}-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    save(model, tokenizer, info, work / "init")
    rows.to_parquet(work / "train.parquet", index=False)
    job = TrainJob(name=name, init_model_dir=str(work / "init"), train_file=str(work / "train.parquet"),
                   storage_dir=str(work / "ray"), epochs=epochs, batch_size=batch_size, learning_rate=lr,
                   head_learning_rate=head_lr, max_length=info.max_length, alpha=alpha, temperature=temperature,
                   use_teacher_logits="teacher_logits" in rows or "teacher_scores" in rows, seed=spec.runtime.seed,
                   workers=spec.runtime.workers, cpus_per_worker=spec.runtime.cpus_per_worker,
                   use_gpu=spec.runtime.use_gpu, max_failures=spec.runtime.max_failures,
                   freeze_word_embeddings=freeze_embeddings, **job_fields)
    checkpoint = launcher_for(spec.runtime).fit(job)
    model.load_state_dict(load_trained_state(checkpoint))
    with atomic_dir(out_dir) as tmp:
        save(model, tokenizer, info, tmp)
        write_json(tmp / HISTORY_FILE, {"job": name, "epochs": load_training_history(checkpoint)})
    # Keep the exact training rows (train.parquet) for audit; the initial weights and the optimiser-laden
    # checkpoints (hundreds of MB for a teacher) are not needed once the trained model is saved.
    shutil.rmtree(work / "init", ignore_errors=True)
    shutil.rmtree(work / "ray", ignore_errors=True)


def _build_teacher(spec: Spec, data: PreparedData, out_dir: str | Path) -> None:
    """Write the teacher to ``out_dir``: fine-tune an encoder (Ray Train), choose a prompted LLM's
    demonstrations, or build each member of an ensemble (see :func:`build_teacher_folder`)."""
    from stillhouse.teachers import build_teacher_folder
    from stillhouse.teachers.llm import save_prompted_teacher

    y = _label_idx(data.seed, data.labels)

    def encoder(teacher: EncoderTeacherSpec, folder: Path) -> None:
        model, tokenizer, info = init_teacher(teacher, data.seed["text"].tolist(), y, data.labels, spec.runtime.seed)
        if teacher.epochs == 0:
            with atomic_dir(folder) as tmp:
                save_classifier(model, tokenizer, info, tmp)
            return
        rows = pd.DataFrame({"text": data.seed["text"], "label_idx": y})
        train_on_launcher(spec, "teacher", model, tokenizer, info, rows, str(folder), epochs=teacher.epochs,
                          batch_size=teacher.batch_size, lr=teacher.learning_rate,
                          head_lr=teacher.head_learning_rate, freeze_embeddings=teacher.freeze_word_embeddings)

    build_teacher_folder(spec.teacher, out_dir, encoder,
                         lambda teacher, folder: save_prompted_teacher(teacher, data.labels, data.seed,
                                                                       spec.runtime.seed, folder),
                         {"labels": data.labels})


def train_teacher_step(spec_json: str, data_dir: str, out_dir: str) -> dict:
    """The teacher: a fine-tuned encoder, a prompted LLM (local or endpoint), or an ensemble of them."""
    spec = spec_from_json(spec_json)
    if _reranking(spec):
        from stillhouse.ranking_steps import train_ranking_teacher

        return train_ranking_teacher(spec, data_dir, out_dir)
    data = PreparedData.load(data_dir)
    _build_teacher(spec, data, out_dir)
    return {"teacher": spec.teacher.kind, "seed_rows": len(data.seed)}


def synthesize_step(spec_json: str, data_dir: str, teacher_dir: str, out_dir: str,
                    validation_dir: str | None = None) -> dict:
    """Generate, teacher-label, filter and validate synthetic rows (see :mod:`stillhouse.synth.synthesize`)."""
    from stillhouse.synth.synthesize import synthesize

    spec = spec_from_json(spec_json)
    if _reranking(spec) and spec.synthesis is not None:
        from stillhouse.synth.queries import synthesize_queries

        report = synthesize_queries(spec, data_dir, teacher_dir, out_dir, validation_dir, device=_device(spec))
        return {"enabled": True, "kept": report["kept"]}
    report = synthesize(spec, data_dir, teacher_dir, out_dir, validation_dir, device=_device(spec))
    return {"enabled": report["enabled"], **({"kept": report["filter"]["kept"]} if report["enabled"] else {})}


def soft_label_step(spec_json: str, data_dir: str, teacher_dir: str, synthetic_dir: str, out_dir: str,
                    validation_dir: str | None = None) -> dict:
    """Teacher logits for the seed and pool rows, plus the synthetic rows' (already computed) → GE soft-label
    suite → ``soft_labels.parquet``."""
    from stillhouse.synth.synthesize import load_synthetic
    from stillhouse.teachers.load import load_teacher
    from stillhouse.validate.runner import require, run_suite
    from stillhouse.validate.suites import soft_label_checks, soft_label_frame

    spec = spec_from_json(spec_json)
    if _reranking(spec):
        from stillhouse.ranking_steps import ranking_soft_label_step

        return ranking_soft_label_step(spec, data_dir, teacher_dir, out_dir, validation_dir)
    data = PreparedData.load(data_dir)
    frames = {"seed": data.seed}
    if "pool" in spec.distillation.sources:
        frames["pool"] = data.pool
    table = soft_label_table(load_teacher(teacher_dir, _device(spec)), frames, spec.distillation.temperature)
    synthetic, _ = load_synthetic(synthetic_dir)
    if "synthetic" in spec.distillation.sources and len(synthetic):
        synthetic_rows = synthetic.assign(split="synthetic", temperature=spec.distillation.temperature)
        table = pd.concat([table, synthetic_rows[table.columns]], ignore_index=True)
    frame = soft_label_frame(table, data.seed, data.labels)
    result = run_suite("soft_labels", frame, soft_label_checks(frame, spec.validation.soft_labels), validation_dir)
    require(result, "check the teacher (its training, prompt or verbalizers), or relax validation.soft_labels")
    counts = {f"{k}_rows": int(v) for k, v in table["split"].value_counts().items()}
    with atomic_dir(out_dir) as tmp:
        write_soft_labels(table, tmp / SOFT_LABELS_FILE)
        write_json(tmp / "summary.json", {"rows": len(table), **counts, "great_expectations": {
            "suite": "soft_labels", "expectations": result.evaluated, "rows": result.rows}})
    return {"rows": len(table), **counts}


def _untrained_student(spec: Spec, teacher_dir: str, data: PreparedData):
    from stillhouse.teachers.load import encoder_folder

    folder = encoder_folder(teacher_dir)
    if folder is not None:
        teacher, tokenizer, info = load_classifier(folder)
    else:  # a prompted teacher only: the spec guarantees a `pretrained` student with its own tokenizer
        teacher, tokenizer = None, None
        info = ClassifierInfo(labels=data.labels, max_length=spec.student.max_length or 128, base_model="")
    return build_student(spec.student, teacher, tokenizer, info, data.seed["text"].tolist(),
                         _label_idx(data.seed, data.labels), spec.runtime.seed)


def _freeze_student(spec: Spec) -> bool:
    return spec.distillation.freeze_word_embeddings and spec.student.kind != "config"


def distillation_rows(spec: Spec, data: PreparedData, soft: pd.DataFrame, synthetic: pd.DataFrame) -> pd.DataFrame:
    """The student's training rows from ``distillation.sources``: seed rows carry their hard label and soft
    label; pool and synthetic rows only a soft label (``label_idx`` -1: the KL term alone). ``weight`` is each
    row's loss weight (``distillation.synthetic_weight`` for synthetic rows, 1 otherwise)."""
    sources = spec.distillation.sources
    parts = []
    if "seed" in sources:
        parts.append(pd.DataFrame({"text": data.seed["text"], "label_idx": _label_idx(data.seed, data.labels),
                                   "teacher_logits": list(attach_teacher_logits(data.seed, soft, "seed")),
                                   "weight": 1.0}))
    weights = {"pool": 1.0, "synthetic": spec.distillation.synthetic_weight}
    for split, frame in (("pool", data.pool), ("synthetic", synthetic)):
        if split in sources and len(frame):
            parts.append(pd.DataFrame({"text": frame["text"], "label_idx": -1,
                                       "teacher_logits": list(attach_teacher_logits(frame, soft, split)),
                                       "weight": weights[split]}))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if rows.empty:
        raise StillhouseError(f"no training rows for the student from distillation.sources {sources} "
                              "(no pool rows and no synthetic rows kept?)", "add `seed` to distillation.sources")
    return rows


def distill_student_step(spec_json: str, data_dir: str, teacher_dir: str, soft_labels_dir: str,
                         synthetic_dir: str, out_dir: str) -> dict:
    """Student on seed (hard + soft label), pool and synthetic rows (soft label only), with the Hinton loss."""
    from stillhouse.synth.synthesize import load_synthetic

    spec = spec_from_json(spec_json)
    if _reranking(spec):
        from stillhouse.ranking_steps import distill_ranking_student

        return distill_ranking_student(spec, data_dir, teacher_dir, soft_labels_dir, synthetic_dir, out_dir)
    data = PreparedData.load(data_dir)
    soft = read_soft_labels(Path(soft_labels_dir) / SOFT_LABELS_FILE)
    rows = distillation_rows(spec, data, soft, load_synthetic(synthetic_dir)[0])
    model, tokenizer, info = _untrained_student(spec, teacher_dir, data)
    d = spec.distillation
    train_on_launcher(spec, "student", model, tokenizer, info, rows, out_dir, epochs=d.epochs,
                      batch_size=d.batch_size, lr=d.learning_rate, head_lr=d.head_learning_rate,
                      freeze_embeddings=_freeze_student(spec), alpha=d.alpha, temperature=d.temperature)
    return {"train_rows": len(rows)}


def baseline_epochs(distill_epochs: int, seed_rows: int, pool_rows: int) -> int:
    """Epochs that give the seed-only baseline the distilled student's number of optimiser steps."""
    return min(_BASELINE_MAX_EPOCHS, max(distill_epochs, math.ceil(distill_epochs * (seed_rows + pool_rows)
                                                                    / max(1, seed_rows))))


def train_baseline_step(spec_json: str, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
    """The same student, trained on the seed's hard labels only: what distillation must beat."""
    spec = spec_from_json(spec_json)
    if _reranking(spec):
        from stillhouse.ranking_steps import train_ranking_baseline

        return train_ranking_baseline(spec, data_dir, teacher_dir, out_dir)
    data = PreparedData.load(data_dir)
    rows = pd.DataFrame({"text": data.seed["text"], "label_idx": _label_idx(data.seed, data.labels)})
    model, tokenizer, info = _untrained_student(spec, teacher_dir, data)
    d = spec.distillation
    epochs = baseline_epochs(d.epochs, len(data.seed), len(data.pool))
    train_on_launcher(spec, "baseline", model, tokenizer, info, rows, out_dir, epochs=epochs,
                      batch_size=d.batch_size, lr=d.learning_rate, head_lr=d.head_learning_rate,
                      freeze_embeddings=_freeze_student(spec))
    return {"train_rows": len(rows), "epochs": epochs}


def evaluate_step(spec_json: str, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                  out_dir: str, synthetic_dir: str | None = None, soft_labels_dir: str | None = None) -> dict:
    """Compare teacher, student and baseline → metrics.json, report.html (with the data section), model_card.md."""
    from stillhouse.evaluate.compare import evaluate_run

    spec = spec_from_json(spec_json)
    if _reranking(spec):
        from stillhouse.evaluate.ranking_eval import evaluate_ranking_run

        return evaluate_ranking_run(spec, data_dir, teacher_dir, student_dir, baseline_dir, out_dir, synthetic_dir)
    return evaluate_run(spec, data_dir, teacher_dir, student_dir, baseline_dir, out_dir,
                        synthetic_dir, soft_labels_dir)


def headline_metrics(metrics: dict) -> dict[str, float]:
    """The evaluation's numbers a Kubeflow run shows in its Metrics view (``model_key`` → value)."""
    reranking = metrics.get("task") == "reranking"
    keys = ("ndcg@10", "mrr@10", "rerank_ms_p50") if reranking else ("accuracy", "macro_f1", "ece", "latency_ms_p50")
    out = {f"{model}_{key}".replace("@", "_at_"): float(values[key]) for model, values in metrics["models"].items()
           for key in keys if values.get(key) is not None}
    retention = "student_retention_ndcg@10" if reranking else "student_retention"
    out["student_retention"] = float(metrics["comparison"][retention])
    return out


def package_step(spec_json: str, data_dir: str, teacher_dir: str, student_dir: str, evaluation_dir: str,
                 out_path: str) -> str:
    """Save the student with its lineage to the BentoML model store; returns the model tag."""
    from stillhouse.registry import save_student

    tag = save_student(spec_from_json(spec_json), data_dir, teacher_dir, student_dir, evaluation_dir)
    with atomic_file(out_path) as handle:
        handle.write(tag + "\n")
    say(f"packaged student: {tag}")
    return tag
