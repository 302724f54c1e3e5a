"""Spec sections of the re-ranking task: its data (BEIR layout, query-level split) and its training choices."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from stillhouse.spec.base import _Strict


class RankingDataSpec(_Strict):
    """A BEIR-layout re-ranking set, split by query into seed (judged), pool (judgments unused) and eval."""

    layout: ClassVar[str] = "BEIR (corpus, queries, qrels)"  # how an error names this layout

    corpus: str = Field(description="corpus.jsonl: one {\"_id\", \"title\", \"text\"} passage per line.")
    queries: str = Field(description="queries.jsonl: one {\"_id\", \"text\"} query per line.")
    qrels: str = Field(description="qrels.tsv: query-id, corpus-id, grade (0 = not relevant); header optional.")
    candidates: str | None = Field(
        None, description="Each query's first-stage candidates (query-id, corpus-id TSV in rank order). "
        "Default: BM25 top `candidates_k` over the corpus.")
    candidates_k: int = Field(30, gt=1, description="Candidates per query from BM25 (a candidates file is used whole).")
    eval_queries: int = Field(gt=0, description="Judged queries held out for evaluation (chosen at random).")
    seed_queries: int | None = Field(
        None, gt=0, description="Judged queries the teacher learns from (default: all judged training queries). "
        "The other training queries form the unlabelled pool: the teacher scores their candidates and their "
        "judgments are never read, as for data nobody has labelled.")
    max_pool_queries: int | None = Field(None, gt=0, description="Cap on the unlabelled pool's queries.")


class RankingSpec(_Strict):
    """How re-rankers learn: the teacher and the qrels-only baseline from judgments, the student from both."""

    # Measured on FiQA (200 held-out questions, BM25 top 30: nDCG@10 0.53): all-MiniLM-L6-v2 as a bi-encoder
    # scores 0.84 and all-mpnet-base-v2 0.91 zero-shot; the same MiniLM as a cross-encoder fine-tuned on 200
    # judged questions (3 epochs) 0.54. Sentence-embedding checkpoints, the encoders most teams have, were
    # trained as bi-encoders; a cross-encoder needs a cross-encoder checkpoint or far more judgments.
    teacher_architecture: Literal["bi_encoder", "cross_encoder"] = Field(
        "bi_encoder", description="How an encoder teacher reads a pair: `bi_encoder` (query and passage embedded "
        "apart, cosine; right for sentence-embedding checkpoints, useful with `teacher.epochs: 0`) or "
        "`cross_encoder` (one joint encoding; right for cross-encoder checkpoints).")
    student_architecture: Literal["teacher", "bi_encoder", "cross_encoder"] = Field(
        "teacher", description="The student's (encoder kinds): the teacher's architecture, or the other one.")

    teacher_loss: Literal["listwise", "pairwise", "pointwise"] = Field(
        "listwise", description="Loss on judgments for the teacher and the qrels-only baseline: `listwise` "
        "(softmax cross-entropy over the query's candidates, Gao et al. 2021), `pairwise` (RankNet) or "
        "`pointwise` (binary cross-entropy per pair).")
    loss: Literal["listwise", "pointwise", "margin_mse"] = Field(
        "listwise", description="Distillation loss on the teacher's scores: `listwise` (KL over each query's "
        "candidates, with distillation.temperature), `pointwise` (KL on each pair's relevance probability) or "
        "`margin_mse` (score margins, Hofstätter et al. 2020).")
    embedding_epochs: int = Field(
        0, ge=0, description="Epochs of embedding-level distillation before the score distillation: a bi-encoder "
        "student learns where the bi-encoder teacher places every corpus passage and training query (cosine to "
        "the teacher's embedding, through a projection into its space fitted by least squares). Unlabelled text "
        "only: no query needs candidates. Needs a bi-encoder teacher and student; 0 = off.")
    embedding_texts: Literal["training", "corpus"] = Field(
        "training", description="Which passages the embedding epochs learn: `training` (every passage except those "
        "that only held-out queries rank, so evaluation stays inductive) or `corpus` (every passage, those only "
        "held-out queries rank too: unlabelled, but transductive).")
    embedding_learning_rate: float = Field(5e-5, gt=0, description="Learning rate of the embedding epochs.")
    embedding_batch_size: int = Field(16, gt=0, description="Texts per step of the embedding epochs.")
    group_size: int = Field(8, gt=1, description="Candidates per query in a training step (relevant ones first, "
                            "the rest drawn anew each epoch).")
    queries_per_batch: int = Field(4, gt=0, description="Queries per training step (teacher, student, baseline); "
                                   "a step scores queries_per_batch × group_size pairs.")
    latency_candidates: int = Field(30, gt=0, description="Candidates re-ranked per query in the latency figure.")
    # Prompted (LLM / endpoint) re-ranking teachers: the question, the answer words, the judged examples.
    llm_instruction: str = Field(
        "Decide whether the passage is relevant to the query: does it answer it or help answer it? "
        "Answer yes or no.", description="First line of an LLM teacher's prompt.")
    llm_yes: str = Field(" yes", description="The answer word for relevant (with its leading space).")
    llm_no: str = Field(" no", description="The answer word for not relevant.")
    llm_shots: int = Field(2, ge=0, description="Judged seed pairs shown before each question (alternating "
                           "relevant / not relevant).")
    llm_max_passage_chars: int = Field(1000, gt=0, description="Passages are cut to this many characters.")
