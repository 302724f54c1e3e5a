"""The one training loop for teachers and students, run per worker by Ray Train's ``TorchTrainer``.

A :class:`TrainJob` says what to train (a model folder to start from), on what (a Parquet file), and how (loss
weights, optimiser, epochs). The same job runs on local Ray or, through a launcher, on a KubeRay cluster. What
one training item is depends on ``task``:

- ``classification``: a row of ``text``, ``label_idx`` (−1 = no hard label), optionally ``teacher_logits`` and
  a loss ``weight``; the model is a classifier folder; the loss :func:`~stillhouse.distill.losses.distillation_loss`.
- ``reranking``: a query with its candidates: ``query``, ``passages`` (list), ``relevance`` (list of grades,
  −1 = unjudged), optionally ``teacher_scores`` (list) and ``weight``; the model is a re-ranker folder; each
  epoch draws ``group_size`` candidates per query (its relevant ones first); the loss
  :func:`~stillhouse.distill.losses.ranking_loss`.
- ``embedding``: a row of ``text`` and the teacher's embedding of it ``teacher_embedding`` (list), optionally
  ``weight``; the model is a bi-encoder re-ranker folder; the loss
  :func:`~stillhouse.distill.losses.embedding_cosine`.

Each epoch ends with a checkpoint (model, optimiser, scheduler, epoch); when a worker dies, Ray Train
restarts the worker group (``FailureConfig.max_failures``) and the loop resumes from the last checkpoint.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from stillhouse.cluster import storage
from stillhouse.distill.losses import distillation_loss, embedding_cosine, ranking_loss
from stillhouse.progress import progress, say
from stillhouse.tasks.classification.model import load_classifier, tokenize

_STATE_FILE = "train_state.pt"
# Fault injection for the resume test: crash once, after this epoch, when the variable is set.
FAIL_AFTER_EPOCH_ENV = "STILLHOUSE_INJECT_FAILURE_AFTER_EPOCH"


@dataclass(frozen=True)
class TrainJob:
    """Everything one training run needs; plain values so it travels to Ray workers and into a RayJob."""

    name: str
    init_model_dir: str
    train_file: str
    storage_dir: str
    epochs: int
    batch_size: int
    learning_rate: float
    head_learning_rate: float
    max_length: int
    alpha: float = 1.0
    temperature: float = 1.0
    use_teacher_logits: bool = False
    seed: int = 13
    workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: bool = False
    max_failures: int = 2
    warmup_fraction: float = 0.1
    freeze_word_embeddings: bool = False
    task: str = "classification"  # | "reranking" | "embedding"
    hard_loss: str = "listwise"  # reranking: a key of losses.HARD_RANKING_LOSSES
    soft_loss: str = "listwise"  # reranking: a key of losses.SOFT_RANKING_LOSSES
    group_size: int = 8  # reranking: candidates per query per step

    def to_config(self) -> dict:
        return asdict(self)


def _batches(n_rows: int, batch_size: int, rank: int, world: int, epoch: int, seed: int) -> list[np.ndarray]:
    """This worker's shuffled batches for one epoch (each worker gets an equal share of whole batches,
    so DDP's collective calls stay in step)."""
    order = np.random.default_rng(seed + epoch).permutation(n_rows)
    per_worker = n_rows // world if world > 1 else n_rows
    mine = order[rank * per_worker:(rank + 1) * per_worker] if world > 1 else order
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def _optimizer(model, job: TrainJob, total_steps: int):
    # Two learning rates: the head often starts near-optimal (logistic-regression init) or tiny, and moves
    # faster than a pretrained encoder should (measured recipe: encoder 5e-5, head 1e-3).
    core = model.module if hasattr(model, "module") else model
    head = list(core.head.parameters()) if hasattr(core, "head") else []  # a monoT5 has no separate head
    head_ids = {id(p) for p in head}
    groups = [{"params": [p for p in core.parameters() if p.requires_grad and id(p) not in head_ids],
               "lr": job.learning_rate},
              {"params": head, "lr": job.head_learning_rate}]
    optimizer = torch.optim.AdamW(groups, weight_decay=0.01)
    warmup = max(1, int(job.warmup_fraction * total_steps))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        return min((step + 1) / warmup, max(0.0, (total_steps - step) / max(1, total_steps - warmup)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def _maybe_inject_failure(epoch: int, storage_dir: str) -> None:
    target = os.environ.get(FAIL_AFTER_EPOCH_ENV)
    if target is None or int(target) != epoch:
        return
    marker = storage.join(storage_dir, ".failure-injected")  # in the job's storage: seen by every worker pod
    if not storage.exists(marker):
        storage.write_text(marker, "1")
        # Die as a worker does mid-epoch: after Ray Train's controller (2 s poll) has registered the
        # checkpoint just reported, then hard, as an OOM kill or a lost node would look.
        time.sleep(5)
        os._exit(1)


class ClassificationItems:
    """Rows of text with a hard label and/or teacher logits: :func:`distillation_loss` per batch of rows."""

    def __init__(self, job: TrainJob):
        self.job = job
        self.model, self.tokenizer, _ = load_classifier(job.init_model_dir)
        frame = pd.read_parquet(job.train_file)
        self.texts = frame["text"].tolist()
        self.labels = torch.tensor(frame["label_idx"].to_numpy(), dtype=torch.long)
        self.teacher = (torch.tensor(np.stack(frame["teacher_logits"].to_numpy()), dtype=torch.float32)
                        if job.use_teacher_logits else None)
        self.weights = torch.tensor(frame["weight"].to_numpy(), dtype=torch.float32) if "weight" in frame else None
        self.count = len(self.texts)

    def loss(self, model, batch: np.ndarray, epoch: int, device) -> torch.Tensor:
        job = self.job
        enc = tokenize(self.tokenizer, [self.texts[i] for i in batch], job.max_length)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=job.use_gpu):
            logits = model(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        return distillation_loss(logits.float(), self.labels[batch].to(device),
                                 self.teacher[batch].to(device) if self.teacher is not None else None,
                                 job.alpha, job.temperature,
                                 self.weights[batch].to(device) if self.weights is not None else None)


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
        from stillhouse.tasks.reranking.model import load_reranker

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

    def loss(self, model, batch: np.ndarray, epoch: int, device) -> torch.Tensor:
        job = self.job
        groups = [sample_group(self.relevance[i], job.group_size, np.random.default_rng([job.seed, epoch, int(i)]))
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
                            teacher.to(device) if teacher is not None else None, job.hard_loss, job.soft_loss,
                            job.alpha, job.temperature,
                            self.weights[batch].to(device) if self.weights is not None else None)


class EmbeddingItems:
    """Texts with the teacher's embeddings: :func:`embedding_cosine` between the bi-encoder's and the teacher's."""

    def __init__(self, job: TrainJob):
        from stillhouse.tasks.reranking.model import BiEncoder, load_reranker

        self.job = job
        self.model, self.tokenizer, _ = load_reranker(job.init_model_dir)
        if not isinstance(self.model, BiEncoder):
            raise ValueError(f"embedding distillation trains a bi-encoder; {job.init_model_dir} is not one")
        frame = pd.read_parquet(job.train_file)
        self.texts = frame["text"].tolist()
        self.teacher = torch.tensor(np.stack(frame["teacher_embedding"].to_numpy()), dtype=torch.float32)
        self.weights = torch.tensor(frame["weight"].to_numpy(), dtype=torch.float32) if "weight" in frame else None
        self.count = len(self.texts)

    def loss(self, model, batch: np.ndarray, epoch: int, device) -> torch.Tensor:
        enc = tokenize(self.tokenizer, [self.texts[i] for i in batch], self.job.max_length)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.job.use_gpu):
            embedded = model(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float()
        return embedding_cosine(embedded, self.teacher[batch].to(device),
                                self.weights[batch].to(device) if self.weights is not None else None)


ITEMS = {"classification": ClassificationItems, "reranking": RankingItems, "embedding": EmbeddingItems}


def train_epoch(model, items: ClassificationItems | RankingItems | EmbeddingItems, batches, epoch: int, device,
                optimizer, scheduler) -> float:
    """One pass over ``batches`` (arrays of item indices): loss, backward, clip to norm 1, step. Returns the
    mean loss (NaN for no batches)."""
    model.train()
    losses = []
    for batch in batches:
        loss = items.loss(model, batch, epoch, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: fine-tune / distil a classifier as described by ``TrainJob(**config)``."""
    import ray.train
    import ray.train.torch

    job = TrainJob(**config)
    # On a KubeRay cluster the inputs are URIs in the job's shared storage; each node copies them once.
    job = replace(job, init_model_dir=str(storage.localize(job.init_model_dir)),
                  train_file=str(storage.localize(job.train_file)))
    torch.manual_seed(job.seed)
    torch.set_num_threads(job.cpus_per_worker)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()

    items = ITEMS[job.task](job)
    model = items.model

    if job.freeze_word_embeddings:
        # The vocabulary matrix is most of a small encoder's parameters: its dense gradient and Adam update
        # were ~40% of a 2-layer MiniLM student's step time on CPU (measured here), and the rows of tokens
        # seen in a small training set would drift away from the rest.
        model.get_input_embeddings().weight.requires_grad_(False)
    model = ray.train.torch.prepare_model(model)
    steps_per_epoch = max(1, math.ceil((items.count // world) / job.batch_size))
    optimizer, scheduler = _optimizer(model, job, steps_per_epoch * job.epochs)

    start_epoch, resumed_at, history = 0, [], []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / _STATE_FILE, map_location=device, weights_only=False)
        (model.module if hasattr(model, "module") else model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"] + 1
        resumed_at = state.get("resumed_at", []) + [start_epoch]
        history = state.get("history", [])
        if rank == 0:
            say(f"{job.name}: resuming from the checkpoint of epoch {start_epoch}")

    for epoch in range(start_epoch, job.epochs):
        batches = _batches(items.count, job.batch_size, rank, world, epoch, job.seed)
        if rank == 0:
            batches = progress(batches, desc=f"{job.name}: epoch {epoch + 1}/{job.epochs}", total=len(batches))
        metrics = {"epoch": epoch, "loss": train_epoch(model, items, batches, epoch, device, optimizer, scheduler)}
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                core = model.module if hasattr(model, "module") else model
                torch.save({"model": core.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "epoch": epoch, "resumed_at": resumed_at,
                            "history": [*history, {"epoch": epoch + 1, "loss": metrics["loss"]}]},
                           Path(folder) / _STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(folder)
                say(f"{job.name}: epoch {epoch + 1}/{job.epochs} loss {metrics['loss']:.4f}")
            ray.train.report(metrics, checkpoint=checkpoint)
        history = history + [{"epoch": epoch + 1, "loss": metrics["loss"]}]
        _maybe_inject_failure(epoch, job.storage_dir)


HISTORY_FILE = "training_history.json"


def load_training_history(checkpoint_dir: str | Path) -> list[dict]:
    """``[{"epoch", "loss"}]`` of every epoch the job trained (across resumptions), from its last checkpoint."""
    return torch.load(Path(checkpoint_dir) / _STATE_FILE, map_location="cpu", weights_only=False).get("history", [])


def load_trained_state(checkpoint_dir: str | Path) -> dict:
    """The model state dict saved by the last epoch's checkpoint."""
    return torch.load(Path(checkpoint_dir) / _STATE_FILE, map_location="cpu", weights_only=False)["model"]
