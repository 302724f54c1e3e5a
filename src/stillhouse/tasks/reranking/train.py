"""Re-ranking's training items for the shared Ray Train loop (:mod:`stillhouse.distill.training`): queries with
their candidate lists (``options``: ``group_size``, ``hard_loss``, ``soft_loss``), and texts with a bi-encoder
teacher's embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from stillhouse.distill.losses import ranking_loss
from stillhouse.distill.representation import TeacherEmbeddingItems
from stillhouse.distill.training import TrainJob
from stillhouse.models.reranker import BiEncoder, load_reranker

RANKING_ITEMS = "stillhouse.tasks.reranking.train:RankingItems"
EMBEDDING_ITEMS = "stillhouse.tasks.reranking.train:EmbeddingItems"


def sample_group(relevance: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``size`` candidates: the relevant ones first (up to ``size``), the rest drawn at random.

    Keeping every relevant candidate gives the hard-label loss something to rank; drawing the rest anew each
    epoch shows the model more of each query's list than one fixed group would.
    """
    relevant = np.flatnonzero(relevance > 0)[:size]
    others = np.setdiff1d(np.arange(len(relevance)), relevant)
    drawn = rng.choice(others, size=min(len(others), size - len(relevant)), replace=False)
    return np.concatenate([relevant, np.sort(drawn)]).astype(np.int64)


class RankingItems:
    """Queries with their candidate lists: :func:`ranking_loss` over ``group_size`` candidates per query."""

    def __init__(self, job: TrainJob):
        self.job = job
        self.model, self.tokenizer, _ = load_reranker(job.init_model_dir)
        frame = pd.read_parquet(job.train_file)
        self.queries = frame["query"].tolist()
        self.passages = [list(p) for p in frame["passages"]]
        self.relevance = [np.asarray(r, dtype=np.float32) for r in frame["relevance"]]
        self.teacher = ([np.asarray(t, dtype=np.float32) for t in frame["teacher_scores"]]
                        if job.use_teacher_logits else None)
        self.weights = torch.tensor(frame["weight"].to_numpy(), dtype=torch.float32) if "weight" in frame else None
        self.count = len(self.queries)
        # candidates per query per step, and keys of losses.HARD_RANKING_LOSSES / SOFT_RANKING_LOSSES
        self.group_size = int(job.options.get("group_size", 8))
        self.hard_loss = job.options.get("hard_loss", "listwise")
        self.soft_loss = job.options.get("soft_loss", "listwise")

    def loss(self, model, batch: np.ndarray, epoch: int, device) -> torch.Tensor:
        job = self.job
        groups = [sample_group(self.relevance[i], self.group_size, np.random.default_rng([job.seed, epoch, int(i)]))
                  for i in batch]
        width = max(len(g) for g in groups)
        mask = torch.zeros(len(batch), width, dtype=torch.bool)
        relevance = torch.full((len(batch), width), -1.0)
        teacher = torch.zeros(len(batch), width) if self.teacher is not None else None
        queries, passages = [], []
        for row, (i, group) in enumerate(zip(batch, groups)):
            mask[row, :len(group)] = True
            relevance[row, :len(group)] = torch.from_numpy(self.relevance[i][group])
            if teacher is not None:
                teacher[row, :len(group)] = torch.from_numpy(self.teacher[i][group])
            queries += [self.queries[i]] * len(group)
            passages += [self.passages[i][j] for j in group]
        core = model.module if hasattr(model, "module") else model
        enc = core.encode(self.tokenizer, queries, passages, job.max_length)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=job.use_gpu):
            flat = model(**{k: v.to(device) for k, v in enc.items() if k in core.INPUTS}).float()
        scores = torch.zeros(len(batch), width, device=device).masked_scatter(mask.to(device), flat)
        return ranking_loss(scores, mask.to(device), relevance.to(device),
                            teacher.to(device) if teacher is not None else None, self.hard_loss, self.soft_loss,
                            job.alpha, job.temperature,
                            self.weights[batch].to(device) if self.weights is not None else None)


class EmbeddingItems(TeacherEmbeddingItems):
    """The bi-encoder's embedding (through its projection into the teacher's space) against the teacher's."""

    def load_student(self, job: TrainJob):
        model, tokenizer, _ = load_reranker(job.init_model_dir)
        if not isinstance(model, BiEncoder):
            raise ValueError(f"embedding distillation trains a bi-encoder; {job.init_model_dir} is not one")
        return model, tokenizer

    def embed(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids, attention_mask)
