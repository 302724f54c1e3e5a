"""The pipeline's verbs for ``task.type: classification`` (see :class:`stillhouse.tasks.base.Task`).

The teacher (a fine-tuned encoder, a prompted LLM or an ensemble) gives every seed, pool and synthetic row a
probability over the labels; the student learns them with the Hinton loss (plus the seed's hard labels, weight
``distillation.alpha``); the baseline is the same student on the seed's hard labels alone.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from stillhouse.data.io import atomic_dir, read_json, write_json
from stillhouse.data.prepare import PreparedData, prepare_data
from stillhouse.distill.fit import baseline_epochs, device, train_on_launcher
from stillhouse.distill.representation import (
    TEACHER_EMBEDDINGS_FILE,
    attach_teacher_embeddings,
    least_squares_projection,
    teacher_embedding_table,
    unit_rows,
)
from stillhouse.distill.soft_labels import (
    SOFT_LABELS_FILE,
    attach_teacher_logits,
    read_soft_labels,
    soft_label_table,
    write_soft_labels,
)
from stillhouse.distill.student import build_student
from stillhouse.distill.training import HISTORY_FILE
from stillhouse.errors import StillhouseError
from stillhouse.models.classifier import (
    CLASSIFIER_FILE,
    ClassifierInfo,
    encode_texts,
    load_classifier,
    save_classifier,
    set_temperature,
)
from stillhouse.models.heads import init_head_by_logistic_regression
from stillhouse.models.prune import prune_classifier
from stillhouse.progress import say
from stillhouse.serve.student import Serving
from stillhouse.spec import EncoderTeacherSpec, Spec
from stillhouse.synth.synthesize import load_synthetic, synthesize
from stillhouse.tasks.classification.evaluate import evaluate_run
from stillhouse.tasks.classification.serve import SERVING
from stillhouse.tasks.classification.train import ITEMS, REPRESENTATION_ITEMS
from stillhouse.teachers import build_teacher_folder, encoder_member
from stillhouse.teachers.encoder import init_teacher
from stillhouse.teachers.llm import save_prompted_teacher
from stillhouse.teachers.load import load_teacher
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import soft_label_checks, soft_label_frame, teacher_embedding_checks


def label_indices(frame: pd.DataFrame, labels: list[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return frame["label"].map(index).to_numpy(dtype=np.int64)


def distillation_rows(spec: Spec, data: PreparedData, soft: pd.DataFrame, synthetic: pd.DataFrame,
                      embeddings: pd.DataFrame | None = None) -> pd.DataFrame:
    """The student's training rows from ``distillation.sources``: seed rows carry their hard label and soft
    label; pool and synthetic rows only a soft label (``label_idx`` -1: the KL term alone). ``weight`` is each
    row's loss weight (``distillation.synthetic_weight`` for synthetic rows, 1 otherwise). With the teacher's
    ``embeddings`` (representation distillation), each row also carries its ``teacher_embedding``."""
    sources = spec.distillation.sources
    parts = []

    def part(split: str, frame: pd.DataFrame, labels, weight: float) -> pd.DataFrame:
        columns = {"text": frame["text"], "label_idx": labels,
                   "teacher_logits": list(attach_teacher_logits(frame, soft, split)), "weight": weight}
        if embeddings is not None:
            columns["teacher_embedding"] = attach_teacher_embeddings(frame, embeddings, split)
        return pd.DataFrame(columns)

    if "seed" in sources:
        parts.append(part("seed", data.seed, label_indices(data.seed, data.labels), 1.0))
    weights = {"pool": 1.0, "synthetic": spec.distillation.synthetic_weight}
    for split, frame in (("pool", data.pool), ("synthetic", synthetic)):
        if split in sources and len(frame):
            parts.append(part(split, frame, -1, weights[split]))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if rows.empty:
        raise StillhouseError(f"no training rows for the student from distillation.sources {sources} "
                              "(no pool rows and no synthetic rows kept?)", "add `seed` to distillation.sources")
    return rows


class ClassificationTask:
    name: ClassVar[str] = "classification"
    headline: ClassVar[tuple[str, ...]] = ("accuracy", "macro_f1", "ece", "latency_ms_p50")
    retention: ClassVar[str] = "student_retention"
    headline_title: ClassVar[str] = "acc"
    serving: ClassVar[Serving] = SERVING

    def prepare(self, spec: Spec, out_dir: str, validation_dir: str | None) -> dict:
        """Read, check, sample and validate (GE seed suite) the data into seed/pool/eval
        (:mod:`stillhouse.data.prepare`)."""
        data = prepare_data(spec, out_dir, validation_dir)
        say(f"data: {data.report['counts']}; seed suite passed")
        return data.report["counts"]

    def teacher(self, spec: Spec, data_dir: str, out_dir: str) -> dict:
        """Fine-tune an encoder (Ray Train), choose a prompted LLM's demonstrations, or build each member of an
        ensemble (:func:`stillhouse.teachers.build_teacher_folder`)."""
        data = PreparedData.load(data_dir)
        y = label_indices(data.seed, data.labels)

        def encoder(teacher: EncoderTeacherSpec, folder: Path) -> None:
            model, tokenizer, info = init_teacher(teacher, data.seed["text"].tolist(), y, data.labels,
                                                  spec.runtime.seed)
            if teacher.epochs == 0:
                with atomic_dir(folder) as tmp:
                    save_classifier(model, tokenizer, info, tmp)
                return
            rows = pd.DataFrame({"text": data.seed["text"], "label_idx": y})
            train_on_launcher(spec, "teacher", model, tokenizer, info, rows, str(folder), save=save_classifier,
                              items=ITEMS, teacher_column="teacher_logits", epochs=teacher.epochs,
                              batch_size=teacher.batch_size, lr=teacher.learning_rate,
                              head_lr=teacher.head_learning_rate, freeze_embeddings=teacher.freeze_word_embeddings)

        build_teacher_folder(spec.teacher, out_dir, encoder,
                             lambda teacher, folder: save_prompted_teacher(teacher, data.labels, data.seed,
                                                                           spec.runtime.seed, folder),
                             {"labels": data.labels})
        return {"teacher": spec.teacher.kind, "seed_rows": len(data.seed)}

    def synthesize(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        """Generate, teacher-label, filter and validate synthetic texts (:mod:`stillhouse.synth.synthesize`)."""
        report = synthesize(spec, data_dir, teacher_dir, out_dir, validation_dir, device=device(spec))
        return {"enabled": report["enabled"], **({"kept": report["filter"]["kept"]} if report["enabled"] else {})}

    def soft_label(self, spec: Spec, data_dir: str, teacher_dir: str, synthetic_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        """Teacher logits for the seed and pool rows, plus the synthetic rows' (already computed) → GE soft-label
        suite → ``soft_labels.parquet``."""
        data = PreparedData.load(data_dir)
        frames = {"seed": data.seed}
        if "pool" in spec.distillation.sources:
            frames["pool"] = data.pool
        representation = spec.distillation.representation.enabled
        pooled: dict[str, np.ndarray] = {}  # an encoder teacher embeds in the same pass as it soft-labels
        table = soft_label_table(load_teacher(teacher_dir, device(spec)), frames, spec.distillation.temperature,
                                 pooled if representation else None)
        synthetic, _ = load_synthetic(synthetic_dir)
        if "synthetic" in spec.distillation.sources and len(synthetic):
            synthetic_rows = synthetic.assign(split="synthetic", temperature=spec.distillation.temperature)
            table = pd.concat([table, synthetic_rows[table.columns]], ignore_index=True)
        frame = soft_label_frame(table, data.seed, data.labels)
        result = run_suite("soft_labels", frame, soft_label_checks(frame, spec.validation.soft_labels),
                           validation_dir)
        require(result, "check the teacher (its training, prompt or verbalizers), or relax validation.soft_labels")
        embeddings = None
        if representation:
            embeddings = self._teacher_embeddings(spec, teacher_dir, {**frames, "synthetic": synthetic}
                                                  if "synthetic" in spec.distillation.sources else frames,
                                                  validation_dir, pooled)
        counts = {f"{k}_rows": int(v) for k, v in table["split"].value_counts().items()}
        with atomic_dir(out_dir) as tmp:
            write_soft_labels(table, tmp / SOFT_LABELS_FILE)
            if embeddings is not None:
                embeddings.to_parquet(tmp / TEACHER_EMBEDDINGS_FILE, index=False)
            write_json(tmp / "summary.json", {"rows": len(table), **counts, "great_expectations": {
                "suite": "soft_labels", "expectations": result.evaluated, "rows": result.rows}})
        return {"rows": len(table), **counts}

    @staticmethod
    def _teacher_embeddings(spec: Spec, teacher_dir: str, frames: dict[str, pd.DataFrame],
                            validation_dir: str | None, known: dict[str, np.ndarray]) -> pd.DataFrame:
        """The teacher's unit sentence embedding of every row the student learns from → GE suite
        (``distillation.representation``; see :mod:`stillhouse.distill.representation`)."""
        table = teacher_embedding_table(teacher_dir, {k: v for k, v in frames.items() if len(v)}, device(spec),
                                        known)
        frame, checks = teacher_embedding_checks(table)
        require(run_suite("teacher_embeddings", frame, checks, validation_dir),
                "check the teacher folder (an encoder classifier), or turn distillation.representation off")
        return table

    @staticmethod
    def _untrained_student(spec: Spec, teacher_dir: str, data: PreparedData):
        folder = encoder_member(teacher_dir, CLASSIFIER_FILE)
        if folder is not None:
            teacher, tokenizer, info = load_classifier(folder)
        else:  # a prompted teacher only: the spec guarantees a `pretrained` student with its own tokenizer
            teacher, tokenizer = None, None
            info = ClassifierInfo(labels=data.labels, max_length=spec.student.max_length or 128, base_model="")
        return build_student(spec.student, teacher, tokenizer, info, data.seed["text"].tolist(),
                             label_indices(data.seed, data.labels), spec.runtime.seed)

    def _fit(self, spec: Spec, name: str, data: PreparedData, teacher_dir: str, rows: pd.DataFrame, out_dir: str,
             epochs: int, **loss) -> None:
        model, tokenizer, info = self._untrained_student(spec, teacher_dir, data)
        vocabulary = spec.student.vocabulary
        if vocabulary.prune:
            # the model's own training texts and the pool: the student and the hard-label student share the
            # real texts' vocabulary (the student's synthetic rows may add to it)
            texts = pd.concat([rows["text"], data.pool["text"]]).drop_duplicates().tolist()
            report = prune_classifier(model, tokenizer, texts, vocabulary.floor, info.max_length)
            info = replace(info, pruning=report.to_dict())
            say(f"{name}: vocabulary pruned to {report.kept_tokens:,} of {report.original_tokens:,} tokens "
                f"({report.text_tokens:,} from {len(texts):,} texts, {report.floor_tokens:,} to the floor); "
                f"parameters {report.parameters_before / 1e6:.1f} M → {report.parameters_after / 1e6:.1f} M")
        d = spec.distillation
        freeze = d.freeze_word_embeddings and spec.student.kind != "config"
        options = {}
        if "teacher_embedding" in rows:  # representation distillation (the student's rows only)
            self._learn_representation(spec, name, data, model, tokenizer, info, rows, out_dir, freeze)
            if d.representation.weight:
                options["representation_weight"] = d.representation.weight
            else:
                model.projection, rows = None, rows.drop(columns="teacher_embedding")
        train_on_launcher(spec, name, model, tokenizer, info, rows, out_dir, save=save_classifier, items=ITEMS,
                          teacher_column="teacher_logits",
                          epochs=epochs, batch_size=d.batch_size, lr=d.learning_rate, head_lr=d.head_learning_rate,
                          freeze_embeddings=freeze, options=options, **loss)
        if model.projection is not None:  # training scaffolding: the student is saved without it
            history = read_json(Path(out_dir) / HISTORY_FILE)
            model.projection = None
            with atomic_dir(out_dir) as tmp:
                save_classifier(model, tokenizer, info, tmp)
                write_json(tmp / HISTORY_FILE, history)

    @staticmethod
    def _learn_representation(spec: Spec, name: str, data: PreparedData, model, tokenizer, info: ClassifierInfo,
                              rows: pd.DataFrame, out_dir: str, freeze: bool) -> None:
        """Give ``model`` its projection into the teacher's embedding space (least squares on its own unit
        embeddings of the rows' texts) and, with ``distillation.representation.epochs``, train it on the cosine
        to the teacher's embeddings first (Ray Train); ``model`` is updated in place. The student's space has
        then moved, so a logistic-regression head is fitted again on the seed."""
        import torch

        d, r = spec.distillation, spec.distillation.representation
        texts = rows["text"].tolist()
        own = unit_rows(encode_texts(model, tokenizer, texts, info.max_length, output="embeddings"))
        model.projection = least_squares_projection(
            torch.from_numpy(own), torch.tensor(np.stack(rows["teacher_embedding"].to_numpy())))
        if not r.epochs:
            return
        stage = str(Path(out_dir).parent / f"{Path(out_dir).name}-representation")
        train_on_launcher(spec, f"{name} (representation)", model, tokenizer, info,
                          rows[["text", "teacher_embedding", "weight"]], stage, save=save_classifier,
                          items=REPRESENTATION_ITEMS, epochs=r.epochs, batch_size=d.batch_size,
                          lr=r.learning_rate or d.learning_rate, head_lr=d.head_learning_rate, freeze_embeddings=freeze)
        shutil.rmtree(stage, ignore_errors=True)
        if spec.student.head_init == "logistic_regression":
            init_head_by_logistic_regression(model, tokenizer, data.seed["text"].tolist(),
                                             label_indices(data.seed, data.labels), info.max_length,
                                             spec.runtime.seed, name)

    def distill(self, spec: Spec, data_dir: str, teacher_dir: str, soft_labels_dir: str, synthetic_dir: str,
                out_dir: str) -> dict:
        """Student on seed (hard + soft label), pool and synthetic rows (soft label only), with the Hinton loss."""
        data = PreparedData.load(data_dir)
        soft = read_soft_labels(Path(soft_labels_dir) / SOFT_LABELS_FILE)
        embeddings = None
        if spec.distillation.representation.enabled:
            path = Path(soft_labels_dir) / TEACHER_EMBEDDINGS_FILE
            if not path.is_file():
                raise StillhouseError(f"{soft_labels_dir} has no teacher embeddings ({TEACHER_EMBEDDINGS_FILE})",
                                      "re-run the soft-label step with distillation.representation set")
            embeddings = pd.read_parquet(path)
        rows = distillation_rows(spec, data, soft, load_synthetic(synthetic_dir)[0], embeddings)
        d = spec.distillation
        self._fit(spec, "student", data, teacher_dir, rows, out_dir, d.epochs, alpha=d.alpha,
                  temperature=d.temperature)
        return {"train_rows": len(rows)}

    def baseline(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
        data = PreparedData.load(data_dir)
        rows = pd.DataFrame({"text": data.seed["text"], "label_idx": label_indices(data.seed, data.labels)})
        epochs = baseline_epochs(spec.distillation.epochs, len(data.seed), len(data.pool))
        self._fit(spec, "baseline", data, teacher_dir, rows, out_dir, epochs)
        return {"train_rows": len(rows), "epochs": epochs}

    def evaluate(self, spec: Spec, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                 out_dir: str, synthetic_dir: str | None, soft_labels_dir: str | None) -> dict:
        return evaluate_run(spec, data_dir, teacher_dir, student_dir, baseline_dir, out_dir, synthetic_dir,
                            soft_labels_dir)

    def set_temperature(self, folder: str, temperature: float) -> None:
        set_temperature(folder, temperature)

    def lineage(self, spec: Spec, metrics: dict) -> dict:
        student, teacher = metrics["models"]["student"], metrics["models"]["teacher"]
        return {"labels": metrics["labels"], "accuracy": student["accuracy"], "macro_f1": student["macro_f1"],
                "teacher_accuracy": teacher["accuracy"], "retention": metrics["comparison"][self.retention]}


TASK = ClassificationTask()
