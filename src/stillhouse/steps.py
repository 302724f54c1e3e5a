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

from stillhouse.cluster.launcher import default_launcher
from stillhouse.data.io import atomic_dir, atomic_file
from stillhouse.data.prepare import PreparedData, prepare_data
from stillhouse.distill.soft_labels import (SOFT_LABELS_FILE, attach_teacher_logits, label_rows, read_soft_labels,
                                           write_soft_labels)
from stillhouse.distill.student import build_student
from stillhouse.distill.training import TrainJob, load_trained_state
from stillhouse.errors import StillhouseError
from stillhouse.progress import say
from stillhouse.spec import Spec, spec_from_json
from stillhouse.tasks.classification import (ClassifierInfo, TextClassifier, load_classifier, save_classifier)
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


def _device(spec: Spec) -> str:
    return "cuda" if spec.runtime.use_gpu and torch.cuda.is_available() else "cpu"


def prepare_step(spec_json: str, out_dir: str) -> dict:
    """Read, check and sample the data into seed/pool/eval (see :mod:`stillhouse.data.prepare`)."""
    data = prepare_data(spec_from_json(spec_json), out_dir)
    say(f"data: {data.report['counts']}")
    return data.report["counts"]


def _label_idx(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return frame["label"].map(index).to_numpy(dtype=np.int64)


def _train(spec: Spec, name: str, model: TextClassifier, tokenizer, info: ClassifierInfo, rows: pd.DataFrame,
           out_dir: str, *, epochs: int, batch_size: int, lr: float, head_lr: float, freeze_embeddings: bool,
           alpha: float = 1.0, temperature: float = 1.0) -> None:
    """Save the initial model, run a TrainJob on the launcher, save the trained model to ``out_dir``."""
    work = Path(out_dir).parent / f"{Path(out_dir).name}-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    save_classifier(model, tokenizer, info, work / "init")
    rows.to_parquet(work / "train.parquet", index=False)
    job = TrainJob(name=name, init_model_dir=str(work / "init"), train_file=str(work / "train.parquet"),
                   storage_dir=str(work / "ray"), epochs=epochs, batch_size=batch_size, learning_rate=lr,
                   head_learning_rate=head_lr, max_length=info.max_length, alpha=alpha, temperature=temperature,
                   use_teacher_logits="teacher_logits" in rows, seed=spec.runtime.seed,
                   workers=spec.runtime.workers, cpus_per_worker=spec.runtime.cpus_per_worker,
                   use_gpu=spec.runtime.use_gpu, max_failures=spec.runtime.max_failures,
                   freeze_word_embeddings=freeze_embeddings)
    checkpoint = default_launcher().fit(job)
    model.load_state_dict(load_trained_state(checkpoint))
    with atomic_dir(out_dir) as tmp:
        save_classifier(model, tokenizer, info, tmp)
    # Keep the exact training rows (train.parquet) for audit; the initial weights and the optimiser-laden
    # checkpoints (hundreds of MB for a teacher) are not needed once the trained model is saved.
    shutil.rmtree(work / "init", ignore_errors=True)
    shutil.rmtree(work / "ray", ignore_errors=True)


def train_teacher_step(spec_json: str, data_dir: str, out_dir: str) -> dict:
    """Teacher: pretrained encoder + logistic-regression head, fine-tuned on the seed set with Ray Train."""
    spec = spec_from_json(spec_json)
    data = PreparedData.load(data_dir)
    y = _label_idx(data.seed, data.labels)
    model, tokenizer, info = init_teacher(spec.teacher, data.seed["text"].tolist(), y, data.labels, spec.runtime.seed)
    if spec.teacher.epochs == 0:
        with atomic_dir(out_dir) as tmp:
            save_classifier(model, tokenizer, info, tmp)
    else:
        rows = pd.DataFrame({"text": data.seed["text"], "label_idx": y})
        _train(spec, "teacher", model, tokenizer, info, rows, out_dir, epochs=spec.teacher.epochs,
               batch_size=spec.teacher.batch_size, lr=spec.teacher.learning_rate,
               head_lr=spec.teacher.head_learning_rate, freeze_embeddings=spec.teacher.freeze_word_embeddings)
    return {"base_model": spec.teacher.model, "seed_rows": len(y)}


def soft_label_step(spec_json: str, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
    """Teacher logits for every seed and pool row → ``soft_labels.parquet``."""
    spec = spec_from_json(spec_json)
    data = PreparedData.load(data_dir)
    table = label_rows(teacher_dir, {"seed": data.seed, "pool": data.pool}, spec.distillation.temperature,
                       device=_device(spec))
    with atomic_dir(out_dir) as tmp:
        write_soft_labels(table, tmp / SOFT_LABELS_FILE)
    return {"rows": len(table)}


def _untrained_student(spec: Spec, teacher_dir: str, data: PreparedData):
    teacher, tokenizer, info = load_classifier(teacher_dir)
    return build_student(spec.student, teacher, tokenizer, info, data.seed["text"].tolist(),
                         _label_idx(data.seed, data.labels), spec.runtime.seed)


def _freeze_student(spec: Spec) -> bool:
    return spec.distillation.freeze_word_embeddings and spec.student.kind != "config"


def distill_student_step(spec_json: str, data_dir: str, teacher_dir: str, soft_labels_dir: str,
                         out_dir: str) -> dict:
    """Student on seed (hard label + soft label) and pool (soft label only) rows, with the Hinton loss."""
    spec = spec_from_json(spec_json)
    data = PreparedData.load(data_dir)
    soft = read_soft_labels(Path(soft_labels_dir) / SOFT_LABELS_FILE)
    rows = pd.concat([
        pd.DataFrame({"text": data.seed["text"], "label_idx": _label_idx(data.seed, data.labels),
                      "teacher_logits": list(attach_teacher_logits(data.seed, soft, "seed"))}),
        pd.DataFrame({"text": data.pool["text"], "label_idx": -1,
                      "teacher_logits": list(attach_teacher_logits(data.pool, soft, "pool"))}),
    ], ignore_index=True)
    model, tokenizer, info = _untrained_student(spec, teacher_dir, data)
    d = spec.distillation
    _train(spec, "student", model, tokenizer, info, rows, out_dir, epochs=d.epochs, batch_size=d.batch_size,
           lr=d.learning_rate, head_lr=d.head_learning_rate, freeze_embeddings=_freeze_student(spec),
           alpha=d.alpha, temperature=d.temperature)
    return {"train_rows": len(rows)}


def baseline_epochs(distill_epochs: int, seed_rows: int, pool_rows: int) -> int:
    """Epochs that give the seed-only baseline the distilled student's number of optimiser steps."""
    return min(_BASELINE_MAX_EPOCHS, max(distill_epochs, math.ceil(distill_epochs * (seed_rows + pool_rows)
                                                                    / max(1, seed_rows))))


def train_baseline_step(spec_json: str, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
    """The same student, trained on the seed's hard labels only: what distillation must beat."""
    spec = spec_from_json(spec_json)
    data = PreparedData.load(data_dir)
    rows = pd.DataFrame({"text": data.seed["text"], "label_idx": _label_idx(data.seed, data.labels)})
    model, tokenizer, info = _untrained_student(spec, teacher_dir, data)
    d = spec.distillation
    epochs = baseline_epochs(d.epochs, len(data.seed), len(data.pool))
    _train(spec, "baseline", model, tokenizer, info, rows, out_dir, epochs=epochs, batch_size=d.batch_size,
           lr=d.learning_rate, head_lr=d.head_learning_rate, freeze_embeddings=_freeze_student(spec))
    return {"train_rows": len(rows), "epochs": epochs}


def evaluate_step(spec_json: str, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                  out_dir: str) -> dict:
    """Compare teacher, student and baseline → metrics.json, report.html, model_card.md."""
    from stillhouse.evaluate.compare import evaluate_run

    return evaluate_run(spec_from_json(spec_json), data_dir, teacher_dir, student_dir, baseline_dir, out_dir)


def package_step(spec_json: str, data_dir: str, teacher_dir: str, student_dir: str, evaluation_dir: str,
                 out_path: str) -> str:
    """Save the student with its lineage to the BentoML model store; returns the model tag."""
    from stillhouse.registry import save_student

    tag = save_student(spec_from_json(spec_json), data_dir, teacher_dir, student_dir, evaluation_dir)
    with atomic_file(out_path) as handle:
        handle.write(tag + "\n")
    say(f"packaged student: {tag}")
    return tag
