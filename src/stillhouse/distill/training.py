"""The one training loop for teachers and students, run per worker by Ray Train's ``TorchTrainer``.

A :class:`TrainJob` says what to train (a model folder to start from), on what (a Parquet file), and how (loss
weights, optimiser, epochs). The same job runs on local Ray or, through a launcher, on a KubeRay cluster. What one
training item is, how the model folder loads and what the loss is are the task's: ``items`` names its items
class (``module:Class``, e.g. :class:`stillhouse.tasks.classification.train.ClassificationItems`), which is
built from the job and provides ``model``, ``count`` and ``loss(model, batch, epoch, device)``; ``options`` are
that class's own settings. This loop knows no task.

Each epoch ends with a checkpoint (model, optimiser, scheduler, epoch); when a worker dies, Ray Train
restarts the worker group (``FailureConfig.max_failures``) and the loop resumes from the last checkpoint.
"""

from __future__ import annotations

import importlib
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from stillhouse.cluster import storage
from stillhouse.progress import progress, say

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
    items: str = ""  # the task's items class, `module:Class` (see the module docstring)
    options: dict = field(default_factory=dict)  # that class's own settings (plain JSON values)

    def to_config(self) -> dict:
        return asdict(self)


class Items(Protocol):
    """One task's training items: ``model`` (loaded from ``job.init_model_dir``), ``count`` items, and the loss of
    a batch of item indices."""

    model: torch.nn.Module
    count: int

    def loss(self, model, batch: np.ndarray, epoch: int, device) -> torch.Tensor: ...


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
    head = list(core.head_parameters())
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


def load_items(job: TrainJob) -> Items:
    """The job's training items: its ``items`` class built from the job."""
    module, _, name = job.items.partition(":")
    if not module or not name:
        raise ValueError(f"TrainJob.items must be `module:Class`, not {job.items!r}")
    return getattr(importlib.import_module(module), name)(job)


def train_epoch(model, items: Items, batches, epoch: int, device,
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

    items = load_items(job)
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
