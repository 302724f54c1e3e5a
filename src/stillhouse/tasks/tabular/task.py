"""The pipeline's verbs for ``task.type: tabular`` (see :class:`stillhouse.tasks.base.Task`).

The teacher (gradient-boosted trees and/or logistic regression, scikit-learn) gives every seed, pool and
synthetic row a probability per label; the student, a small MLP with its preprocessing, learns them with the
same Hinton loss as text (plus the seed's labels, weight ``distillation.alpha``) on the shared Ray Train loop;
the baseline is the same student on the seed's labels alone. Evaluation adds risk and fairness figures and the
promotion gate.
"""

from __future__ import annotations

import math
import shutil
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
from stillhouse.evaluate.metrics import softmax
from stillhouse.evaluate.risk import cost_threshold
from stillhouse.progress import say
from stillhouse.serve.student import Serving
from stillhouse.spec import Spec
from stillhouse.tasks.tabular.data import TabularData, label_indices, prepare_tabular, row_fingerprints
from stillhouse.tasks.tabular.evaluate import evaluate_tabular
from stillhouse.tasks.tabular.mitigate import (
    Setting,
    fit_setting_teacher,
    row_weights,
    settings_of,
    write_rule,
)
from stillhouse.tasks.tabular.model import (
    TabularStudent,
    load_tabular,
    new_student,
    save_tabular,
    set_tabular_temperature,
)
from stillhouse.tasks.tabular.preprocess import Preprocessor
from stillhouse.tasks.tabular.serve import SERVING
from stillhouse.tasks.tabular.synthesize import load_profiles, synthesize_profiles, write_no_profiles
from stillhouse.tasks.tabular.teacher import load_tabular_teacher, write_teacher
from stillhouse.tasks.tabular.train import ITEMS
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import soft_label_checks, soft_label_frame

# Loop epochs (each ends with a checkpoint) a tabular training run is cut into; the spec's epochs are passes
# over the rows (see TabularItems).
CHECKPOINTS = 6


def _save(model, preprocessor, info, folder) -> None:
    save_tabular(TabularStudent(model, preprocessor, info), folder)


def _soft_labels(spec: Spec, data: TabularData, frames: dict, teacher_dir: Path, synthesis_labels: bool
                 ) -> pd.DataFrame:
    """One teacher's logits for each split's rows (the synthetic rows keep the labels synthesis gave them when
    that teacher labelled them: ``synthesis_labels``)."""
    teacher, fingerprint, inputs = load_tabular_teacher(teacher_dir), dir_fingerprint(teacher_dir), data.schema.inputs
    parts = [pd.DataFrame({"row_id": frame["row_id"].values, "split": split,
                           "teacher_logits": list(frame["teacher_logits"]) if split == "synthetic" and synthesis_labels
                           else list(teacher.logits(frame)),
                           "temperature": spec.distillation.temperature, "teacher": spec.teacher.describe(),
                           "teacher_fingerprint": fingerprint,
                           "input_fingerprint": row_fingerprints(frame, inputs)})
             for split, frame in frames.items() if len(frame)]
    return pd.concat(parts, ignore_index=True)


def _check_soft_labels(spec: Spec, data: TabularData, table: pd.DataFrame, setting: Setting,
                       validation_dir: str | None):
    frame = soft_label_frame(table, data.seed, data.labels)
    suite = "soft_labels" if setting.name == "none" else f"soft_labels_{setting.name.replace('-', '_')}"
    result = run_suite(suite, frame, soft_label_checks(frame, spec.validation.soft_labels), validation_dir)
    require(result, "check the teacher's settings, or relax validation.soft_labels")
    return result


def _training_rows(spec: Spec, data: TabularData, soft: pd.DataFrame, synthetic: pd.DataFrame,
                   setting: Setting) -> pd.DataFrame:
    inputs, sources = data.schema.inputs, spec.distillation.sources
    weights = {"pool": 1.0, "synthetic": spec.distillation.synthetic_weight}
    parts = []
    for split, frame in (("seed", data.seed), ("pool", data.pool), ("synthetic", synthetic)):
        if split in sources and len(frame):
            logits = attach_teacher_logits(frame, soft, split, row_fingerprints(frame, inputs))
            weight = row_weights(setting, data.schema, frame) if split == "seed" else weights[split]
            parts.append(frame[inputs].assign(label_idx=label_indices(frame, data.labels) if split == "seed" else -1,
                                              teacher_logits=list(logits), weight=weight))
    if not parts:
        raise StillhouseError(f"no training rows for the student from distillation.sources {sources}",
                              "add `seed` to distillation.sources")
    return pd.concat(parts, ignore_index=True)


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
        """One teacher per setting of the mitigation frontier (``none`` at the folder's top)."""
        data = TabularData.load(data_dir)
        pre = Preprocessor.fit(data.seed, data.schema.numeric, data.schema.categorical)
        y = label_indices(data.seed, data.labels)
        settings = settings_of(spec.task)
        with atomic_dir(out_dir) as tmp:
            for setting in settings:
                teacher = fit_setting_teacher(setting, spec.teacher, data.seed, y, pre, data.schema, spec.task,
                                              spec.runtime.seed)
                write_teacher(teacher, spec.teacher.describe(), setting.folder(tmp))
                if not setting.retrains:  # post-processing: a rule on this (unmitigated) teacher's probabilities
                    positive = teacher.probabilities(data.seed)[:, data.labels.index(data.schema.positive)]
                    write_rule(setting, positive, data.seed, data.schema, spec.task.costs, setting.folder(tmp))
                say(f"teacher: {spec.teacher.describe()}, {setting.describe()}, fitted on {len(data.seed)} seed rows")
        return {"teacher": spec.teacher.kind, "seed_rows": len(data.seed), "settings": [s.name for s in settings]}

    def synthesize(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        if spec.synthesis is None:
            return write_no_profiles(out_dir)
        report = synthesize_profiles(spec, TabularData.load(data_dir), load_tabular_teacher(teacher_dir), out_dir,
                                     validation_dir)
        return {"enabled": True, "kept": report["kept"]}

    def soft_label(self, spec: Spec, data_dir: str, teacher_dir: str, synthetic_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        """Each setting's teacher logits for the seed, pool and kept synthetic rows → GE soft-label suite."""
        data = TabularData.load(data_dir)
        synthetic, _ = load_profiles(synthetic_dir)
        frames = {"seed": data.seed, "pool": data.pool if "pool" in spec.distillation.sources else data.pool[:0],
                  "synthetic": synthetic if "synthetic" in spec.distillation.sources else synthetic[:0]}
        tables = {setting: _soft_labels(spec, data, frames, setting.folder(teacher_dir), setting.name == "none")
                  for setting in settings_of(spec.task) if setting.retrains}
        results = {setting: _check_soft_labels(spec, data, table, setting, validation_dir)
                   for setting, table in tables.items()}
        table = tables[next(iter(tables))]
        counts = {f"{k}_rows": int(v) for k, v in table["split"].value_counts().items()}
        with atomic_dir(out_dir) as tmp:
            for setting, table in tables.items():
                folder = setting.folder(tmp)
                folder.mkdir(parents=True, exist_ok=True)
                write_soft_labels(table, folder / SOFT_LABELS_FILE)
            result = results[next(iter(results))]
            write_json(tmp / "summary.json", {"rows": len(table), **counts, "great_expectations": {
                "suite": "soft_labels", "expectations": result.evaluated, "rows": result.rows},
                "settings": [s.name for s in tables]})
        return {"rows": len(table), **counts}

    @staticmethod
    def _fit(spec: Spec, name: str, data: TabularData, rows: pd.DataFrame, out_dir: str, epochs: int,
             **loss) -> None:
        pre = Preprocessor.fit(data.seed, data.schema.numeric, data.schema.categorical)
        costs = spec.task.costs
        student = new_student(pre, data.seed, data.labels, data.schema.positive, spec.student.hidden,
                              spec.student.dropout, spec.runtime.seed, spec.task.contributions,
                              cost_threshold(costs.false_negative, costs.false_positive) if data.schema.binary
                              else None)
        d = spec.distillation
        checkpoints = min(epochs, CHECKPOINTS)
        train_on_launcher(spec, name, student.model, student.preprocessor, student.info, rows, out_dir, save=_save,
                          items=ITEMS, teacher_column="teacher_logits", epochs=checkpoints, batch_size=d.batch_size,
                          lr=d.learning_rate,
                          head_lr=d.head_learning_rate, freeze_embeddings=False,
                          options={"repeats": math.ceil(epochs / checkpoints)}, **loss)

    def distill(self, spec: Spec, data_dir: str, teacher_dir: str, soft_labels_dir: str, synthetic_dir: str,
                out_dir: str) -> dict:
        """Per setting, a student on the seed (label + soft label), pool and synthetic rows (soft label only).
        With a frontier every setting is trained into a staging folder beside the step's, and the step's folder
        is assembled from them at the end: it appears whole or not at all (each ``-work`` folder keeps its
        training rows)."""
        data = TabularData.load(data_dir)
        synthetic = load_profiles(synthetic_dir)[0]
        settings = settings_of(spec.task)
        if len(settings) == 1:
            rows = self._distill_setting(spec, data, soft_labels_dir, synthetic, settings[0], out_dir)
            return {"train_rows": rows}
        staging = Path(out_dir).parent / f"{Path(out_dir).name}-work-settings"
        shutil.rmtree(staging, ignore_errors=True)
        for setting in settings:  # `none` first: post-processing settings start from its student
            folder = staging / setting.name
            if setting.retrains:
                rows = self._distill_setting(spec, data, soft_labels_dir, synthetic, setting, str(folder))
                continue
            shutil.copytree(staging / "none", folder)
            positive = softmax(load_tabular(folder).logits(data.seed))[:, data.labels.index(data.schema.positive)]
            write_rule(setting, positive, data.seed, data.schema, spec.task.costs, folder)
        with atomic_dir(out_dir) as tmp:
            for setting in settings:
                shutil.copytree(staging / setting.name, setting.folder(tmp), dirs_exist_ok=True)
        for setting in settings:
            shutil.rmtree(staging / setting.name)
        return {"train_rows": rows, "settings": [s.name for s in settings]}

    def _distill_setting(self, spec: Spec, data: TabularData, soft_labels_dir: str, synthetic: pd.DataFrame,
                         setting: Setting, out_dir: str) -> int:
        soft = read_soft_labels(setting.folder(soft_labels_dir) / SOFT_LABELS_FILE)
        rows = _training_rows(spec, data, soft, synthetic, setting)
        d = spec.distillation
        name = "student" if setting.name == "none" else f"student-{setting.name}"
        self._fit(spec, name, data, rows, out_dir, d.epochs, alpha=d.alpha, temperature=d.temperature)
        return len(rows)

    def baseline(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
        """The same student on the seed's labels alone, unmitigated: what distillation must beat."""
        data = TabularData.load(data_dir)
        rows = data.seed[data.schema.inputs].assign(label_idx=label_indices(data.seed, data.labels), weight=1.0)
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
                **({"mitigation": metrics["frontier"]["choice"]["chosen"],
                    "mitigation_auc_cost": -metrics["frontier"]["cost"]["auc"]}
                   if metrics.get("frontier") else {}),  # evaluations written before the frontier have none
                **({"features": {"repo": spec.data.features.repo, "feature_service": spec.data.features.feature_service,
                                 "entity": spec.task.entity}} if spec.data.features is not None else {})}


TASK = TabularTask()
