"""The tabular student's training items for the shared Ray Train loop (:mod:`stillhouse.distill.training`):
the same loss as text (:func:`~stillhouse.distill.losses.distillation_loss`: KL on the teacher's logits at a
temperature, cross-entropy on labelled rows), over preprocessed feature rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from stillhouse.distill.losses import distillation_loss
from stillhouse.distill.training import TrainJob
from stillhouse.tasks.tabular.model import load_tabular

ITEMS = "stillhouse.tasks.tabular.train:TabularItems"


class TabularItems:
    """Rows of raw columns with a hard label (``label_idx``, -1 for none) and/or teacher logits and a weight.

    ``options["repeats"]``: passes over the rows per loop epoch. An MLP wants tens of passes over a small
    table, and each loop epoch ends with a checkpoint reported to Ray Train (about 2 s here, against
    milliseconds for the pass itself), so one loop epoch makes several passes.
    """

    def __init__(self, job: TrainJob):
        self.job = job
        student = load_tabular(job.init_model_dir)
        self.model = student.model
        frame = pd.read_parquet(job.train_file)
        self.features = torch.from_numpy(student.preprocessor.transform(frame))
        self.labels = torch.tensor(frame["label_idx"].to_numpy(), dtype=torch.long)
        self.teacher = (torch.tensor(np.stack(frame["teacher_logits"].to_numpy()), dtype=torch.float32)
                        if job.use_teacher_logits else None)
        self.weights = torch.tensor(frame["weight"].to_numpy(), dtype=torch.float32) if "weight" in frame else None
        self.rows = len(frame)
        self.count = self.rows * int(job.options.get("repeats", 1))

    def loss(self, model, batch: np.ndarray, epoch: int, device) -> torch.Tensor:
        job = self.job
        batch = batch % self.rows
        logits = model(self.features[batch].to(device))
        return distillation_loss(logits, self.labels[batch].to(device),
                                 self.teacher[batch].to(device) if self.teacher is not None else None,
                                 job.alpha, job.temperature,
                                 self.weights[batch].to(device) if self.weights is not None else None)
