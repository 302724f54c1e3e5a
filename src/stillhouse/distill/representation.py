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
    from stillhouse.errors import StillhouseError
    from stillhouse.models.classifier import encode_texts, load_classifier
    from stillhouse.teachers.load import encoder_folder

    vectors = dict(known or {})
    missing = [split for split in frames if split not in vectors]
    if missing:
        folder = encoder_folder(teacher_dir)
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
    from stillhouse.errors import StillhouseError

    rows = table[table["kind"] == split].set_index("id")["embedding"]
    missing = ~frame["row_id"].isin(rows.index)
    if missing.any():
        raise StillhouseError(f"{int(missing.sum())} {split} row(s) have no teacher embedding",
                              "re-run the soft-label step with distillation.representation set")
    return [np.asarray(v, dtype=np.float32) for v in rows.loc[frame["row_id"]].to_numpy()]
