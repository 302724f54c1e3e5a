"""Training any task's model on the spec's launcher (local Ray or KubeRay): the one path every teacher, student
and baseline takes, so the run folder, the audit trail and the checkpoint handling are the same for all."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd

from stillhouse.cluster.launcher import launcher_for
from stillhouse.data.io import atomic_dir, write_json
from stillhouse.distill.training import HISTORY_FILE, TrainJob, load_trained_state, load_training_history
from stillhouse.spec import Spec

# The hard-label baseline sees only the seed set; it gets as many optimiser steps as the distilled student
# (more epochs over fewer rows), capped so a tiny seed does not mean hundreds of epochs.
_BASELINE_MAX_EPOCHS = 30


def train_on_launcher(spec: Spec, name: str, model, tokenizer, info, rows: pd.DataFrame, out_dir: str, *,
                      save: Callable, items: str, epochs: int, batch_size: int, lr: float, head_lr: float,
                      freeze_embeddings: bool, alpha: float = 1.0, temperature: float = 1.0,
                      teacher_column: str | None = None, **job_fields) -> None:
    """Save the initial model (``save``: the task's model writer), run a TrainJob of the task's ``items`` class
    on the launcher, save the trained model to ``out_dir``. ``teacher_column`` is the rows' column of teacher
    outputs the items learn from where the rows have it (the task's: logits, scores). ``job_fields`` are further
    :class:`TrainJob` fields (the items' ``options``)."""
    work = Path(out_dir).parent / f"{Path(out_dir).name}-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    save(model, tokenizer, info, work / "init")
    rows.to_parquet(work / "train.parquet", index=False)
    job = TrainJob(name=name, init_model_dir=str(work / "init"), train_file=str(work / "train.parquet"),
                   storage_dir=str(work / "ray"), epochs=epochs, batch_size=batch_size, learning_rate=lr,
                   head_learning_rate=head_lr, max_length=info.max_length, alpha=alpha, temperature=temperature,
                   use_teacher_logits=teacher_column is not None and teacher_column in rows, seed=spec.runtime.seed,
                   workers=spec.runtime.workers, cpus_per_worker=spec.runtime.cpus_per_worker,
                   use_gpu=spec.runtime.use_gpu, max_failures=spec.runtime.max_failures,
                   freeze_word_embeddings=freeze_embeddings, items=items, **job_fields)
    checkpoint = launcher_for(spec.runtime).fit(job)
    model.load_state_dict(load_trained_state(checkpoint))
    with atomic_dir(out_dir) as tmp:
        save(model, tokenizer, info, tmp)
        write_json(tmp / HISTORY_FILE, {"job": name, "epochs": load_training_history(checkpoint)})
    # Keep the exact training rows (train.parquet) for audit; the initial weights and the optimiser-laden
    # checkpoints (hundreds of MB for a teacher) are not needed once the trained model is saved.
    shutil.rmtree(work / "init", ignore_errors=True)
    shutil.rmtree(work / "ray", ignore_errors=True)


def baseline_epochs(distill_epochs: int, seed_rows: int, pool_rows: int) -> int:
    """Epochs that give the seed-only baseline the distilled student's number of optimiser steps."""
    return min(_BASELINE_MAX_EPOCHS, max(distill_epochs, math.ceil(distill_epochs * (seed_rows + pool_rows)
                                                                    / max(1, seed_rows))))


def device(spec: Spec) -> str:
    """Where a step runs its inference: the GPU when the spec asks for one and there is one."""
    import torch

    return "cuda" if spec.runtime.use_gpu and torch.cuda.is_available() else "cpu"
