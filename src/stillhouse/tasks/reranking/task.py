"""The pipeline's verbs for ``task.type: reranking`` (see :class:`stillhouse.tasks.base.Task`).

Same flow as classification, per query instead of per row: the teacher (a cross-encoder fine-tuned on the
seed queries' judgments) scores every candidate of the seed and pool queries; those scores are the soft labels;
the student learns them (``task.loss``) plus the seed judgments (``task.teacher_loss``, weight
``distillation.alpha``); the baseline is the same student on the seed judgments alone. With
``task.embedding_epochs`` a bi-encoder student first learns the bi-encoder teacher's embeddings of every
passage and training query (stored by the soft-label step beside the scores).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from stillhouse.data.io import atomic_dir, write_json
from stillhouse.distill.fit import baseline_epochs, device, train_on_launcher
from stillhouse.distill.student import encoder_layer_subset
from stillhouse.errors import StillhouseError
from stillhouse.models.hf import load_encoder
from stillhouse.models.reranker import (
    ARCHITECTURES,
    RERANKER_FILE,
    BiEncoder,
    RerankerInfo,
    embed_texts,
    fit_projection,
    load_reranker,
    load_seq2seq,
    new_monot5,
    save_reranker,
    tiny_t5,
)
from stillhouse.progress import say
from stillhouse.serve.student import Serving
from stillhouse.spec import Spec
from stillhouse.synth.synthesize import write_disabled
from stillhouse.tasks.reranking.evaluate import evaluate_ranking_run
from stillhouse.tasks.reranking.prepare import PreparedRanking, prepare_ranking
from stillhouse.tasks.reranking.serve import SERVING
from stillhouse.tasks.reranking.synthesize import load_synthetic_queries, synthesize_queries
from stillhouse.tasks.reranking.teacher import load_ranking_teacher, save_prompted_ranker, score_groups
from stillhouse.tasks.reranking.train import EMBEDDING_ITEMS, RANKING_ITEMS
from stillhouse.teachers import build_teacher_folder, encoder_member
from stillhouse.validate.runner import require, run_suite
from stillhouse.validate.suites import ranking_soft_label_checks, teacher_embedding_checks

SOFT_SCORES_FILE = "ranking_soft_labels.parquet"
TEACHER_EMBEDDINGS_FILE = "ranking_teacher_embeddings.parquet"


def _fit(spec: Spec, name: str, model, tokenizer, info: RerankerInfo, rows: pd.DataFrame, out_dir: str, *,
         epochs: int, lr: float, head_lr: float, freeze: bool, **fields) -> None:
    r = spec.task
    train_on_launcher(spec, name, model, tokenizer, info, rows, out_dir, epochs=epochs,
                      batch_size=r.queries_per_batch, lr=lr, head_lr=head_lr, freeze_embeddings=freeze,
                      save=save_reranker, items=RANKING_ITEMS, teacher_column="teacher_scores",
                      options={"hard_loss": r.teacher_loss, "soft_loss": r.loss, "group_size": r.group_size}, **fields)


def _build_ranking_teacher(spec: Spec, data: PreparedRanking, out_dir: str | Path) -> None:
    """Write the re-ranking teacher: fine-tune a cross- or bi-encoder (Ray Train; ``epochs: 0`` keeps it as it
    ships), choose a prompted LLM's judged examples, or build each member of an ensemble."""
    seed = data.groups("seed")

    def encoder(teacher, folder: Path) -> None:
        encoder, tokenizer = load_encoder(teacher.model)
        architecture = spec.task.teacher_architecture
        model = ARCHITECTURES[architecture](encoder)
        info = RerankerInfo(kind=architecture, max_length=teacher.max_length, base_model=teacher.model)
        if teacher.epochs == 0:
            with atomic_dir(folder) as tmp:
                save_reranker(model, tokenizer, info, tmp)
            return
        _fit(spec, "teacher", model, tokenizer, info, seed[["query", "passages", "relevance"]], str(folder),
             epochs=teacher.epochs, lr=teacher.learning_rate, head_lr=teacher.head_learning_rate,
             freeze=teacher.freeze_word_embeddings)

    build_teacher_folder(spec.teacher, out_dir, encoder,
                         lambda teacher, folder: save_prompted_ranker(teacher, spec.task, seed,
                                                                      spec.runtime.seed, folder),
                         {"task": "reranking"})


def embedding_texts(spec: Spec, data: PreparedRanking) -> pd.DataFrame:
    """The texts the student learns the teacher's embeddings of (kind, id, text): the training queries of
    ``distillation.sources`` (held-out queries never) and passages per ``task.embedding_texts``: with
    ``training``, every passage except those that only held-out queries rank (training queries' candidates and
    passages no query ranks); with ``corpus``, every passage, those only held-out queries rank included (no
    labels, but the student has then seen the texts it is evaluated on)."""
    splits = [s for s in ("seed", "pool") if s in spec.distillation.sources]
    queries = data.queries[data.queries["split"].isin(splits)]
    passages = data.passages
    if spec.task.embedding_texts == "training":
        training = set(data.queries.loc[data.queries["split"].isin(("seed", "pool")), "query_id"])
        ranked_by = data.candidates["query_id"].isin(training)
        held_out_only = set(data.candidates.loc[~ranked_by, "passage_id"]) - set(
            data.candidates.loc[ranked_by, "passage_id"])
        passages = passages[~passages["passage_id"].isin(held_out_only)]
    return pd.concat([pd.DataFrame({"kind": "passage", "id": passages["passage_id"],
                                    "text": passages["text"]}),
                      pd.DataFrame({"kind": "query", "id": queries["query_id"], "text": queries["text"]})],
                     ignore_index=True)


def _teacher_embeddings(spec: Spec, data: PreparedRanking, teacher_dir: str,
                        validation_dir: str | None) -> pd.DataFrame:
    """The bi-encoder teacher's embedding of every :func:`embedding_texts` text → GE suite → (kind, id,
    embedding, teacher)."""
    folder = encoder_member(teacher_dir, RERANKER_FILE)
    model, tokenizer, info = load_reranker(folder) if folder is not None else (None, None, None)
    if not isinstance(model, BiEncoder):
        raise StillhouseError("task.embedding_epochs needs a bi-encoder teacher, and this teacher has none",
                              "use task.teacher_architecture `bi_encoder`, or set task.embedding_epochs to 0")
    texts = embedding_texts(spec, data)
    vectors = embed_texts(model, tokenizer, texts["text"].tolist(), info.max_length, desc="teacher embeddings",
                          device=device(spec))
    table = texts.drop(columns="text").assign(embedding=list(vectors), teacher=str(folder))
    frame, checks = teacher_embedding_checks(table)
    require(run_suite("ranking_teacher_embeddings", frame, checks, validation_dir),
            "check the teacher folder (a bi-encoder), or set task.embedding_epochs to 0")
    return table


def untrained_ranking_student(spec: Spec, teacher_dir: str):
    """The student before training: (model, tokenizer, info) from ``student.kind``."""
    import torch

    torch.manual_seed(spec.runtime.seed)
    folder = encoder_member(teacher_dir, RERANKER_FILE)
    if folder is not None:
        teacher, tokenizer, teacher_info = load_reranker(folder)
    else:  # a prompted teacher only: the spec guarantees a student with its own tokenizer
        teacher, tokenizer, teacher_info = None, None, RerankerInfo(kind="cross_encoder", max_length=256)
    student = spec.student
    max_length = student.max_length or teacher_info.max_length
    choice = spec.task.student_architecture
    if choice == "teacher":  # a prompted-only teacher has no architecture to copy: a cross-encoder then
        choice = teacher_info.kind if teacher_info.kind in ARCHITECTURES else "cross_encoder"
    architecture = ARCHITECTURES[choice]
    if student.kind == "layer_subset":
        model = architecture(encoder_layer_subset(teacher.encoder, student.kept_layers))
        if isinstance(model, type(teacher)):  # the same scoring unit: start from the teacher's
            model.head.load_state_dict(teacher.head.state_dict())
        base = teacher_info.base_model
    elif student.kind == "pretrained":
        encoder, tokenizer = load_encoder(student.model)
        if student.layers:
            encoder = encoder_layer_subset(encoder, student.layers)
        model, base = architecture(encoder), student.model
    elif student.kind == "monot5":
        if student.model:
            seq2seq, tokenizer = load_seq2seq(student.model)
            base = student.model
        else:
            cfg = student.config
            seq2seq = tiny_t5(tokenizer, cfg.hidden_size, cfg.num_layers, cfg.num_heads, cfg.intermediate_size)
            base = "config"
        model = new_monot5(seq2seq, tokenizer)
    else:
        from transformers import BertConfig, BertModel

        cfg = student.config
        model = architecture(BertModel(BertConfig(
            vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
            max_position_embeddings=max(512, max_length)), add_pooling_layer=False))
        base = "config"
    return model, tokenizer, RerankerInfo(kind=choice, max_length=max_length, base_model=base)


def _freeze(spec: Spec) -> bool:
    return spec.distillation.freeze_word_embeddings and spec.student.kind not in ("config",) and not (
        spec.student.kind == "monot5" and not spec.student.model)


def distillation_groups(spec: Spec, data: PreparedRanking, soft: pd.DataFrame,
                        synthetic: pd.DataFrame | None = None) -> pd.DataFrame:
    """The student's training queries from ``distillation.sources``: seed queries with their judgments and
    teacher scores, pool and synthetic queries with teacher scores alone (relevance -1); synthetic queries
    weigh ``distillation.synthetic_weight``."""
    scores = {(q, p): s for q, p, s in soft[["query_id", "passage_id", "teacher_score"]].itertuples(index=False)}
    parts = []
    for split in ("seed", "pool"):
        if split not in spec.distillation.sources:
            continue
        groups = data.groups(split)
        groups["teacher_scores"] = [[scores[(q, p)] for p in ids] for q, ids in
                                    zip(groups["query_id"], groups["passage_ids"])]
        parts.append(groups.assign(weight=1.0))
    if "synthetic" in spec.distillation.sources and synthetic is not None and len(synthetic):
        parts.append(synthetic.assign(relevance=[[-1.0] * len(ids) for ids in synthetic["passage_ids"]],
                                      weight=spec.distillation.synthetic_weight))
    rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if rows.empty:
        raise StillhouseError(f"no training queries for the student from distillation.sources "
                              f"{spec.distillation.sources}", "add `seed` or `pool` to distillation.sources")
    return rows[["query", "passages", "relevance", "teacher_scores", "weight"]]


def _learn_teacher_embeddings(spec: Spec, data: PreparedRanking, soft_dir: Path, model, tokenizer,
                              info: RerankerInfo, out_dir: str) -> int:
    """Embedding-level distillation (``task.embedding_epochs``): fit ``model``'s projection into the teacher's
    space, then train it on the cosine to the teacher's embeddings (Ray Train); ``model`` is updated in place
    for the score distillation that follows. The stage's model folder (``<out_dir>-embedding``) is removed once
    learnt; its ``-work`` folder keeps the training rows."""
    import torch

    path = soft_dir / TEACHER_EMBEDDINGS_FILE
    if not path.is_file():
        raise StillhouseError(f"{soft_dir} has no teacher embeddings ({TEACHER_EMBEDDINGS_FILE})",
                              "re-run the soft-label step with task.embedding_epochs set")
    table = pd.read_parquet(path).merge(embedding_texts(spec, data), on=["kind", "id"], how="left",
                                        validate="one_to_one")
    rows = table[["text", "embedding"]].rename(columns={"embedding": "teacher_embedding"})
    fit_projection(model, tokenizer, rows["text"].tolist(),
                   torch.tensor(np.stack(rows["teacher_embedding"].to_numpy()), dtype=torch.float32),
                   info.max_length)
    r = spec.task
    stage = str(Path(out_dir).parent / f"{Path(out_dir).name}-embedding")
    train_on_launcher(spec, "student (embeddings)", model, tokenizer, info, rows, stage,
                      epochs=r.embedding_epochs, batch_size=r.embedding_batch_size, lr=r.embedding_learning_rate,
                      head_lr=spec.distillation.head_learning_rate, freeze_embeddings=_freeze(spec),
                      save=save_reranker, items=EMBEDDING_ITEMS)
    shutil.rmtree(stage, ignore_errors=True)
    return len(rows)


class RerankingTask:
    name: ClassVar[str] = "reranking"
    headline: ClassVar[tuple[str, ...]] = ("ndcg@10", "mrr@10", "rerank_ms_p50")
    retention: ClassVar[str] = "student_retention_ndcg@10"
    headline_title: ClassVar[str] = "nDCG@10"
    serving: ClassVar[Serving] = SERVING

    def prepare(self, spec: Spec, out_dir: str, validation_dir: str | None) -> dict:
        """Read the BEIR-layout set, split it by query, find first-stage candidates and validate (GE)
        (:mod:`stillhouse.tasks.reranking.prepare`)."""
        report = prepare_ranking(spec, out_dir, validation_dir).report
        say(f"data: {report['counts']} queries; first stage: {report['first_stage']}; seed suite passed")
        return report["counts"]

    def teacher(self, spec: Spec, data_dir: str, out_dir: str) -> dict:
        """The teacher: a cross-encoder fine-tuned on the seed judgments (``task.teacher_loss``), a prompted LLM
        (local or endpoint) asked for relevance, or an ensemble of them."""
        data = PreparedRanking.load(data_dir)
        _build_ranking_teacher(spec, data, out_dir)
        return {"teacher": spec.teacher.kind, "seed_queries": int((data.queries["split"] == "seed").sum())}

    def soft_label(self, spec: Spec, data_dir: str, teacher_dir: str, synthetic_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        """Teacher scores for every candidate of the seed and pool queries → GE suite → ``ranking_soft_labels.parquet``
        (query_id, passage_id, split, teacher_score, teacher fingerprint)."""
        data = PreparedRanking.load(data_dir)
        teacher = load_ranking_teacher(teacher_dir, device(spec))
        splits = [s for s in ("seed", "pool") if s in spec.distillation.sources]
        frames = []
        for split in splits:
            groups = data.groups(split)
            scores = score_groups(teacher, groups, desc=f"teacher scores ({split})")
            frames.append(pd.DataFrame({
                "query_id": [q for q, ids in zip(groups["query_id"], groups["passage_ids"]) for _ in ids],
                "passage_id": [p for ids in groups["passage_ids"] for p in ids],
                "relevance": [g for grades in groups["relevance"] for g in grades],
                "split": split, "teacher_score": np.concatenate(scores) if scores else [], "teacher": teacher.name,
                "teacher_fingerprint": teacher.fingerprint}))
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if table.empty:
            raise StillhouseError("no queries to score: distillation.sources has neither `seed` nor `pool`",
                                  "add `seed` or `pool` to distillation.sources")
        frame, checks = ranking_soft_label_checks(table, spec.validation.soft_labels)
        result = run_suite("ranking_soft_labels", frame, checks, validation_dir)
        require(result, "check the teacher's training (task.teacher_loss, teacher.epochs), or relax "
                "validation.soft_labels")
        counts = {f"{k}_queries": int(v) for k, v in table.groupby("split")["query_id"].nunique().items()}
        embeddings = _teacher_embeddings(spec, data, teacher_dir, validation_dir) if spec.task.embedding_epochs \
            else None
        with atomic_dir(out_dir) as tmp:
            table.drop(columns="relevance").to_parquet(tmp / SOFT_SCORES_FILE, index=False)
            if embeddings is not None:
                embeddings.to_parquet(tmp / TEACHER_EMBEDDINGS_FILE, index=False)
                counts["embedded_texts"] = len(embeddings)
            write_json(tmp / "summary.json", {"pairs": len(table), **counts, "great_expectations": {
                "suite": "ranking_soft_labels", "expectations": result.evaluated, "rows": result.rows}})
        return {"pairs": len(table), **counts}

    def synthesize(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str,
                   validation_dir: str | None) -> dict:
        """Synthetic queries written for real passages, kept where the teacher ranks their passage high
        (:mod:`stillhouse.tasks.reranking.synthesize`); with synthesis off, the empty folder every task writes."""
        if spec.synthesis is None:
            return write_disabled(out_dir)

        report = synthesize_queries(spec, data_dir, teacher_dir, out_dir, validation_dir, device=device(spec))
        return {"enabled": True, "kept": report["kept"]}

    def distill(self, spec: Spec, data_dir: str, teacher_dir: str, soft_labels_dir: str, synthetic_dir: str,
                out_dir: str) -> dict:
        data = PreparedRanking.load(data_dir)
        synthetic = load_synthetic_queries(synthetic_dir) if synthetic_dir else None
        rows = distillation_groups(spec, data, pd.read_parquet(Path(soft_labels_dir) / SOFT_SCORES_FILE), synthetic)
        model, tokenizer, info = untrained_ranking_student(spec, teacher_dir)
        d = spec.distillation
        summary = {"train_queries": len(rows)}
        if spec.task.embedding_epochs:
            summary["embedded_texts"] = _learn_teacher_embeddings(spec, data, Path(soft_labels_dir), model, tokenizer,
                                                                  info, out_dir)
        _fit(spec, "student", model, tokenizer, info, rows, out_dir, epochs=d.epochs, lr=d.learning_rate,
             head_lr=d.head_learning_rate, freeze=_freeze(spec), alpha=d.alpha, temperature=d.temperature)
        return summary

    def baseline(self, spec: Spec, data_dir: str, teacher_dir: str, out_dir: str) -> dict:
        """The same student on the seed judgments alone, with as many optimiser steps as the distilled one."""
        data = PreparedRanking.load(data_dir)
        rows = data.groups("seed")[["query", "passages", "relevance"]]
        pool = int((data.queries["split"] == "pool").sum()) if "pool" in spec.distillation.sources else 0
        model, tokenizer, info = untrained_ranking_student(spec, teacher_dir)
        d = spec.distillation
        epochs = baseline_epochs(d.epochs, len(rows), pool)
        _fit(spec, "baseline", model, tokenizer, info, rows, out_dir, epochs=epochs, lr=d.learning_rate,
             head_lr=d.head_learning_rate, freeze=_freeze(spec))
        return {"train_queries": len(rows), "epochs": epochs}

    def evaluate(self, spec: Spec, data_dir: str, teacher_dir: str, student_dir: str, baseline_dir: str,
                 out_dir: str, synthetic_dir: str | None, soft_labels_dir: str | None) -> dict:
        return evaluate_ranking_run(spec, data_dir, teacher_dir, student_dir, baseline_dir, out_dir, synthetic_dir)

    def lineage(self, spec: Spec, metrics: dict) -> dict:
        student, teacher = metrics["models"]["student"], metrics["models"]["teacher"]
        return {"ndcg@10": student["ndcg@10"], "mrr@10": student["mrr@10"], "teacher_ndcg@10": teacher["ndcg@10"],
                "retention": metrics["comparison"][self.retention]}


TASK = RerankingTask()
