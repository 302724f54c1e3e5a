"""Representation distillation for classification: the student learns where its teacher places each text.

Label-level distillation gives a student one probability vector per text. The teacher's sentence embedding
carries more: how each text relates to every other, including along directions no label separates. A student
of another family (a MiniLM under an MPNet teacher) shares no layers or hidden size with its teacher, so the
signal is taken at the one level both have, the pooled sentence embedding (the MiniLM and TinyBERT papers match
attention and hidden states layer by layer, which needs related architectures):

1. the soft-label step stores the teacher's unit sentence embedding of every seed, pool and synthetic text
   (``teacher_embeddings.parquet``, checked by a Great Expectations suite);
2. the student gets a linear projection into the teacher's space, fitted by least squares on its own unit
   embeddings (:func:`least_squares_projection`), so training starts from the best linear map between the two
   spaces rather than a random one;
3. ``distillation.representation.epochs`` first trains the student on ``1 − cos(P·s, t)`` alone, and/or
   ``distillation.representation.weight`` adds that term to every row of the label distillation
   (:func:`~stillhouse.distill.losses.representation_distillation_loss`);
4. the projection is training scaffolding: the saved student has none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from stillhouse.distill.losses import embedding_cosine
from stillhouse.errors import StillhouseError
from stillhouse.models.classifier import CLASSIFIER_FILE, encode_texts, load_classifier, tokenize
from stillhouse.teachers import encoder_member

TEACHER_EMBEDDINGS_FILE = "teacher_embeddings.parquet"


def least_squares_projection(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> nn.Linear:
    """The linear map (no bias) from rows of ``x`` ``[n, hidden]`` to rows of ``y`` ``[n, dim]`` with the least
    squared error, with a small ridge (relative to the Gram matrix's mean diagonal) that keeps it well posed
    when there are fewer texts than dimensions."""
    x, y = x.double(), y.double()
    with torch.no_grad():
        gram = x.T @ x
        gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype)
        solution = torch.linalg.solve(gram, x.T @ y)  # [hidden, dim]
    projection = nn.Linear(x.shape[1], y.shape[1], bias=False)
    with torch.no_grad():
        projection.weight.copy_(solution.T.float())
    return projection


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def teacher_embedding_table(teacher_dir: str, frames: dict[str, pd.DataFrame], device: str,
                            known: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """The encoder teacher's unit sentence embedding of each named frame's (``row_id``, ``text``) rows →
    (kind = split, id = row_id, embedding). ``known`` holds the splits already embedded (pooled, in the frame's
    order: the soft-label pass computes them beside the logits); the rest are embedded here. An ensemble's
    embeddings are its encoder member's."""
    vectors = dict(known or {})
    missing = [split for split in frames if split not in vectors]
    if missing:
        folder = encoder_member(teacher_dir, CLASSIFIER_FILE)
        if folder is None:
            raise StillhouseError("distillation.representation needs a teacher with an encoder, and this one has "
                                  "none", "use an encoder teacher (or an ensemble with one), or turn "
                                  "distillation.representation off")
        model, tokenizer, info = load_classifier(folder)
        for split in missing:
            vectors[split] = encode_texts(model, tokenizer, frames[split]["text"].tolist(), info.max_length,
                                          output="embeddings", device=device,
                                          desc=f"teacher: embedding {split} ({len(frames[split])} rows)")
    return pd.concat([pd.DataFrame({"kind": split, "id": frame["row_id"].values,
                                    "embedding": list(unit_rows(vectors[split]))})
                      for split, frame in frames.items()], ignore_index=True)


def attach_teacher_embeddings(frame: pd.DataFrame, table: pd.DataFrame, split: str) -> list[np.ndarray]:
    """The teacher embedding of each of ``frame``'s rows (by ``row_id``), in its order; a row without one is
    an error naming the split (the soft-label step embeds every row it labels)."""
    rows = table[table["kind"] == split].set_index("id")["embedding"]
    missing = ~frame["row_id"].isin(rows.index)
    if missing.any():
        raise StillhouseError(f"{int(missing.sum())} {split} row(s) have no teacher embedding",
                              "re-run the soft-label step with distillation.representation set")
    return [np.asarray(v, dtype=np.float32) for v in rows.loc[frame["row_id"]].to_numpy()]


class TeacherEmbeddingItems:
    """Training items for the shared Ray Train loop: texts with the teacher's embeddings, and
    :func:`~stillhouse.distill.losses.embedding_cosine` between the student's embedding and the teacher's (the
    first stage of representation distillation, for any task). A task's subclass says how its student is loaded
    (:meth:`load_student`, returning the model and its tokenizer) and where its embedding is (:meth:`embed`)."""

    def __init__(self, job):
        self.job = job
        self.model, self.tokenizer = self.load_student(job)
        frame = pd.read_parquet(job.train_file)
        self.texts = frame["text"].tolist()
        self.embeddings = torch.tensor(np.stack(frame["teacher_embedding"].to_numpy()), dtype=torch.float32)
        self.weights = torch.tensor(frame["weight"].to_numpy(), dtype=torch.float32) if "weight" in frame else None
        self.count = len(self.texts)

    def load_student(self, job) -> tuple[nn.Module, object]:
        raise NotImplementedError

    def embed(self, model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The student's embedding ``[batch, teacher_dim]`` of a batch of tokenized texts."""
        raise NotImplementedError

    def loss(self, model, batch: np.ndarray, epoch: int, device) -> torch.Tensor:
        enc = tokenize(self.tokenizer, [self.texts[i] for i in batch], self.job.max_length)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=self.job.use_gpu):
            embedded = self.embed(model, enc["input_ids"].to(device), enc["attention_mask"].to(device)).float()
        return embedding_cosine(embedded, self.embeddings[batch].to(device),
                                self.weights[batch].to(device) if self.weights is not None else None)
