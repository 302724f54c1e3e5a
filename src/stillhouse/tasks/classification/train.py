"""Classification's training items for the shared Ray Train loop (:mod:`stillhouse.distill.training`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from stillhouse.distill.losses import distillation_loss
from stillhouse.distill.training import TrainJob
from stillhouse.tasks.classification.model import load_classifier, tokenize

ITEMS = "stillhouse.tasks.classification.train:ClassificationItems"


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
