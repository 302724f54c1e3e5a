"""The pipeline's verbs for ``task.type: tabular`` (see :class:`stillhouse.tasks.base.Task`).

The teacher (gradient-boosted trees and/or logistic regression, scikit-learn) gives every seed, pool and
synthetic row a probability per label; the student, a small MLP with its preprocessing, learns them with the
same Hinton loss as text (plus the seed's labels, weight ``distillation.alpha``) on the shared Ray Train loop;
the baseline is the same student on the seed's labels alone. Evaluation adds risk and fairness figures and the
promotion gate.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar

import pandas as pd

from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.data.io import atomic_dir, write_json
from stillhouse.distill.fit import baseline_epochs, train_on_launcher
from stillhouse.distill.soft_labels import (
    SOFT_LABELS_FILE,
    attach_teacher_logits,
    read_soft_labels,
    write_soft_labels,
)
from stillhouse.errors import StillhouseError
from stillhouse.progress import say
from stillhouse.serve.student import Serving
from stillhouse.spec import Spec
from stillhouse.tasks.tabular.data import TabularData, label_indices, prepare_tabular, reweighing, row_fingerprints
from stillhouse.tasks.tabular.evaluate import evaluate_tabular
from stillhouse.tasks.tabular.model import TabularStudent, new_student, save_tabular, set_tabular_temperature
from stillhouse.tasks.tabular.preprocess import Preprocessor
from stillhouse.tasks.tabular.serve import SERVING
from stillhouse.tasks.tabular.synthesize import load_profiles, synthesize_profiles, write_no_profiles
from stillhouse.tasks.tabular.teacher import fit_teacher, load_tabular_teacher, save_teacher
from stillhouse.tasks.tabular.train import ITEMS
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import soft_label_checks, soft_label_frame

# Loop epochs (each ends with a checkpoint) a tabular training run is cut into; the spec's epochs are passes
# over the rows (see TabularItems).
CHECKPOINTS = 6


def _save(model, preprocessor, info, folder) -> None:
    save_tabular(TabularStudent(model, preprocessor, info), folder)


class TabularTask:
    name: ClassVar[str] = "tabular"
    headline: ClassVar[tuple[str, ...]] = ("auc", "accuracy", "ece", "cost_weighted_error", "latency_ms_p50")
    retention: ClassVar[str] = "student_retention"
    headline_title: ClassVar[str] = "AUC"
    serving: ClassVar[Serving] = SERVING

    def prepare(self, spec: Spec, out_dir: str, validation_dir: str | None) -> dict:
        data = prepare_tabular(spec, out_dir, validation_dir)
        say(f"data: {data.report['counts']}; seed suite passed")
        return data.report["counts"]

    def teacher(self, spec: Spec, data_dir: str, out_dir: str) -> dict:
        data = TabularData.load(data_dir)
        pre = Preprocessor.fit(data.seed, data.schema.numeric, data.schema.categorical)
        teacher = fit_teacher(spec.teacher, data.seed, label_indices(data.seed, data.labels), pre, data.labels,
                              spec.runtime.seed, reweighing(data.schema, data.seed, spec.task.mitigation))
        save_teacher(teacher, spec.teacher, out_dir)
        say(f"teacher: {spec.teacher.describe()} fitted on {len(data.seed)} seed rows")
        return {"teacher": spec.teacher.kind, "seed_rows": len(data.seed)}

    def synthesize(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        if spec.synthesis is None:
            return write_no_profiles(out_dir)
        report = synthesize_profiles(spec, TabularData.load(data_dir), load_tabular_teacher(teacher_dir), out_dir,
                                     validation_dir)
        return {"enabled": True, "kept": report["kept"]}

    def soft_label(self, spec: Spec, data_dir: str, teacher_dir: str, synthetic_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        """Teacher logits for the seed, pool and kept synthetic rows → GE soft-label suite."""
        data = TabularData.load(data_dir)
        teacher = load_tabular_teacher(teacher_dir)
        frames = {"seed": data.seed, "pool": data.pool if "pool" in spec.distillation.sources else data.pool[:0]}
        synthetic, _ = load_profiles(synthetic_dir)
        if "synthetic" in spec.distillation.sources:
            frames["synthetic"] = synthetic
        fingerprint, inputs = dir_fingerprint(teacher_dir), data.schema.inputs
        parts = [pd.DataFrame({"row_id": frame["row_id"].values, "split": split,
                               "teacher_logits": list(frame["teacher_logits"]) if split == "synthetic"
                               else list(teacher.logits(frame)),
                               "temperature": spec.distillation.temperature, "teacher": spec.teacher.describe(),
                               "teacher_fingerprint": fingerprint,
                               "input_fingerprint": row_fingerprints(frame, inputs)})
                 for split, frame in frames.items() if len(frame)]
        table = pd.concat(parts, ignore_index=True)
        frame = soft_label_frame(table, data.seed, data.labels)
        result = run_suite("soft_labels", frame, soft_label_checks(frame, spec.validation.soft_labels),
                           validation_dir)
        require(result, "check the teacher's settings, or relax validation.soft_labels")
        counts = {f"{k}_rows": int(v) for k, v in table["split"].value_counts().items()}
        with atomic_dir(out_dir) as tmp:
            write_soft_labels(table, tmp / SOFT_LABELS_FILE)
            write_json(tmp / "summary.json", {"rows": len(table), **counts, "great_expectations": {
                "suite": "soft_labels", "expectations": result.evaluated, "rows": result.rows}})
        return {"rows": len(table), **counts}

    @staticmethod
    def _fit(spec: Spec, name: str, data: TabularData, rows: pd.DataFrame, out_dir: str, epochs: int,
             **loss) -> None:
        pre = Preprocessor.fit(data.seed, data.schema.numeric, data.schema.categorical)
        student = new_student(pre, data.seed, data.labels, data.schema.positive, spec.student.hidden,
                              spec.student.dropout, spec.runtime.seed, spec.task.contributions)
        d = spec.distillation
        checkpoints = min(epochs, CHECKPOINTS)
        train_on_launcher(spec, name, student.model, student.preprocessor, student.info, rows, out_dir, save=_save,
                          items=ITEMS, teacher_column="teacher_logits", epochs=checkpoints, batch_size=d.batch_size,
                          lr=d.learning_rate,
                          head_lr=d.head_learning_rate, freeze_embeddings=False,
                          options={"repeats": math.ceil(epochs / checkpoints)}, **loss)

    def distill(self, spec: Spec, data_dir: str, teacher_dir: str, soft_labels_dir: str, synthetic_dir: str,
                out_dir: str) -> dict:
        """Student on seed (label + soft label), pool and synthetic rows (soft label only)."""
        data = TabularData.load(data_dir)
        soft = read_soft_labels(Path(soft_labels_dir) / SOFT_LABELS_FILE)
        inputs, sources = data.schema.inputs, spec.distillation.sources
        weights = {"seed": 1.0, "pool": 1.0, "synthetic": spec.distillation.synthetic_weight}
        parts = []
        for split, frame in (("seed", data.seed), ("pool", data.pool), ("synthetic", load_profiles(synthetic_dir)[0])):
            if split in sources and len(frame):
                logits = attach_teacher_logits(frame, soft, split, row_fingerprints(frame, inputs))
                weight = (reweighing(data.schema, frame, spec.task.mitigation) if split == "seed"
                          else weights[split])
                parts.append(frame[inputs].assign(
                    label_idx=label_indices(frame, data.labels) if split == "seed" else -1,
                    teacher_logits=list(logits), weight=weight))
        if not parts:
            raise StillhouseError(f"no training rows for the student from distillation.sources {sources}",
                                  "add `seed` to distillation.sources")
        rows = pd.concat(parts, ignore_index=True)
        d = spec.distillation
        self._fit(spec, "student", data, rows, out_dir, d.epochs, alpha=d.alpha,
                  temperature=d.temperature)
        return {"train_rows": len(rows)}

    def baseline(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
        data = TabularData.load(data_dir)
        rows = data.seed[data.schema.inputs].assign(label_idx=label_indices(data.seed, data.labels),
                                                     weight=reweighing(data.schema, data.seed, spec.task.mitigation))
        # as many optimiser steps as the student where the cap allows, never fewer epochs than the student
        d = spec.distillation
        epochs = max(d.epochs, baseline_epochs(d.epochs, len(data.seed), len(data.pool)))
        self._fit(spec, "baseline", data, rows, out_dir, epochs)
        return {"train_rows": len(rows), "epochs": epochs}

    def evaluate(self, spec: Spec, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                 out_dir: str, synthetic_dir: str | None, soft_labels_dir: str | None) -> dict:
        return evaluate_tabular(spec, data_dir, teacher_dir, student_dir, baseline_dir, out_dir, synthetic_dir,
                                soft_labels_dir)

    def set_temperature(self, folder: str, temperature: float) -> None:
        set_tabular_temperature(folder, temperature)

    def lineage(self, spec: Spec, metrics: dict) -> dict:
        student, teacher = metrics["models"]["student"], metrics["models"]["teacher"]
        return {"labels": metrics["labels"], "auc": student["auc"], "accuracy": student["accuracy"],
                "teacher_auc": teacher["auc"], "retention": metrics["comparison"][self.retention],
                "gate": metrics["gate"]["verdict"], "gate_checks": metrics["gate"]["checks"],
                **({"features": {"repo": spec.data.features.repo, "feature_service": spec.data.features.feature_service,
                                 "entity": spec.task.entity}} if spec.data.features is not None else {})}


TASK = TabularTask()
