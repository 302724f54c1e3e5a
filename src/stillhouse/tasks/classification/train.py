"""Classification's training items for the shared Ray Train loop (:mod:`stillhouse.distill.training`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from stillhouse.distill.losses import distillation_loss, representation_distillation_loss
from stillhouse.distill.representation import TeacherEmbeddingItems
from stillhouse.distill.training import TrainJob
from stillhouse.models.classifier import load_classifier, tokenize

ITEMS = "stillhouse.tasks.classification.train:ClassificationItems"
REPRESENTATION_ITEMS = "stillhouse.tasks.classification.train:RepresentationItems"


def _embeddings(frame: pd.DataFrame) -> torch.Tensor | None:
    """The rows' teacher sentence embeddings ``[rows, dim]``, where the rows carry them."""
    if "teacher_embedding" not in frame:
        return None
    return torch.tensor(np.stack(frame["teacher_embedding"].to_numpy()), dtype=torch.float32)


class ClassificationItems:
    """Rows of text with a hard label and/or teacher logits: :func:`distillation_loss` per batch of rows; with
    ``options.representation_weight`` and the teacher's embeddings,
    :func:`representation_distillation_loss`."""

    def __init__(self, job: TrainJob):
        self.job = job
        self.model, self.tokenizer, _ = load_classifier(job.init_model_dir)
        frame = pd.read_parquet(job.train_file)
        self.texts = frame["text"].tolist()
        self.labels = torch.tensor(frame["label_idx"].to_numpy(), dtype=torch.long)
        self.teacher = (torch.tensor(np.stack(frame["teacher_logits"].to_numpy()), dtype=torch.float32)
                        if job.use_teacher_logits else None)
        self.weights = torch.tensor(frame["weight"].to_numpy(), dtype=torch.float32) if "weight" in frame else None
        self.representation_weight = float(job.options.get("representation_weight", 0.0))
        self.embeddings = _embeddings(frame) if self.representation_weight else None
        self.count = len(self.texts)

    def loss(self, model, batch: np.ndarray, epoch: int, device) -> torch.Tensor:
        job = self.job
        enc = tokenize(self.tokenizer, [self.texts[i] for i in batch], job.max_length)
        weights = self.weights[batch].to(device) if self.weights is not None else None
        teacher = self.teacher[batch].to(device) if self.teacher is not None else None
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=job.use_gpu):
            out = model(enc["input_ids"].to(device), enc["attention_mask"].to(device),
                        projected=self.embeddings is not None)
        if self.embeddings is None:
            return distillation_loss(out.float(), self.labels[batch].to(device), teacher, job.alpha,
                                     job.temperature, weights)
        logits, projected = out
        return representation_distillation_loss(logits.float(), self.labels[batch].to(device), teacher, job.alpha,
                                                job.temperature, projected.float(),
                                                self.embeddings[batch].to(device), self.representation_weight,
                                                weights)


class RepresentationItems(TeacherEmbeddingItems):
    """The classifier's projected embedding against the teacher's. The head takes no part and is frozen
    (DistributedDataParallel rejects parameters without a gradient)."""

    def load_student(self, job: TrainJob):
        model, tokenizer, _ = load_classifier(job.init_model_dir)
        if model.projection is None:
            raise ValueError(f"representation training needs a projection; {job.init_model_dir} has none")
        model.head.requires_grad_(False)
        return model, tokenizer

    def embed(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids, attention_mask, projected=True)[1]
