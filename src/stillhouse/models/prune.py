"""Vocabulary pruning: a student keeps only the embedding rows of the tokens it will see.

A small encoder's vocabulary embeddings are most of its weights (MiniLM-L6: 30,522 × 384 = 11.7 M of 22.7 M
parameters), while one domain's texts use a few thousand tokens. Pruning keeps the rows of

- the tokenizer's special tokens ([CLS], [SEP], [PAD], [UNK], …),
- every token that occurs in the training texts (seed, pool and synthetic rows), and
- if those are fewer than ``floor``, the tokenizer's lowest ids after them, up to ``floor`` tokens: WordPiece and
  BPE vocabularies are built most-frequent-first, so those are its most common pieces, which serving text will
  meet.

The tokenizer is not rewritten: it tokenises as before, and an id map (old id → new id) in front of the
embedding turns every pruned-away token into ``[UNK]``. Text whose tokens were all kept is therefore encoded
exactly as before (the same rows, in a smaller table), and :func:`unknown_tokens` counts what a text lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from stillhouse.models.hf import count_parameters


@dataclass(frozen=True)
class PruneReport:
    """What pruning kept and removed (``pruning`` in the student's ``classifier.json`` and in metrics)."""

    original_tokens: int
    kept_tokens: int
    special_tokens: int
    text_tokens: int
    floor_tokens: int
    parameters_before: int
    parameters_after: int

    def to_dict(self) -> dict:
        return asdict(self)


def kept_token_ids(tokenizer, texts: list[str], floor: int, max_length: int | None = None) -> tuple[np.ndarray, dict]:
    """Sorted old ids to keep, and how many came from each source (special, texts, floor)."""
    vocab = len(tokenizer)
    special = set(int(i) for i in tokenizer.all_special_ids)
    seen: set[int] = set()
    for start in range(0, len(texts), 512):
        encoded = tokenizer(list(texts[start:start + 512]), truncation=max_length is not None,
                            max_length=max_length, add_special_tokens=True)["input_ids"]
        for ids in encoded:
            seen.update(int(i) for i in ids)
    keep = special | seen
    from_texts = len(keep) - len(special)
    added = 0
    for token_id in range(vocab):
        if len(keep) >= floor:
            break
        if token_id not in keep and not _placeholder(tokenizer.convert_ids_to_tokens(token_id)):
            keep.add(token_id)
            added += 1
    return np.array(sorted(keep), dtype=np.int64), {"special_tokens": len(special), "text_tokens": from_texts,
                                                    "floor_tokens": added}


def _placeholder(token: str | None) -> bool:
    """BERT's ``[unused12]`` and the like: reserved ids no text produces."""
    return token is None or token.startswith(("[unused", "<unused"))


def id_map_for(keep: np.ndarray, vocab_size: int, unk_id: int) -> torch.Tensor:
    """``[vocab_size]`` int64: old id → new id; ids not kept → the new id of ``unk_id``."""
    position = {int(old): new for new, old in enumerate(keep)}
    if unk_id not in position:
        raise ValueError("the [UNK] token must be kept")
    mapping = torch.full((vocab_size,), position[unk_id], dtype=torch.long)
    mapping[torch.as_tensor(keep)] = torch.arange(len(keep))
    return mapping


def prune_embeddings(encoder: nn.Module, keep: np.ndarray, id_map: torch.Tensor) -> None:
    """Replace ``encoder``'s input embedding by its rows ``keep`` (in order) and update its config: the
    vocabulary size, and the padding id, which some encoders (MPNet, RoBERTa) use to number positions."""
    old = encoder.get_input_embeddings()
    pad = encoder.config.pad_token_id
    new_pad = int(id_map[pad]) if pad is not None and pad < len(id_map) else None
    new = nn.Embedding(len(keep), old.embedding_dim, padding_idx=new_pad)
    with torch.no_grad():
        new.weight.copy_(old.weight[torch.as_tensor(keep)])
    new.weight.requires_grad_(old.weight.requires_grad)
    encoder.set_input_embeddings(new)
    encoder.config.vocab_size = len(keep)
    if new_pad is not None:
        encoder.config.pad_token_id = new_pad
        embeddings = getattr(encoder, "embeddings", None)
        if embeddings is not None and hasattr(embeddings, "padding_idx"):
            embeddings.padding_idx = new_pad


def prune_classifier(model, tokenizer, texts: list[str], floor: int, max_length: int | None = None) -> PruneReport:
    """Prune a :class:`~stillhouse.models.classifier.TextClassifier` in place to the tokens of
    ``texts`` (plus special tokens and the floor); it then carries the id map."""
    before = count_parameters(model)
    vocab = model.get_input_embeddings().num_embeddings
    if model.id_map is not None:
        raise ValueError("this classifier is already pruned")
    keep, counts = kept_token_ids(tokenizer, texts, floor, max_length)
    keep = keep[keep < vocab]
    id_map = id_map_for(keep, max(vocab, len(tokenizer)), int(tokenizer.unk_token_id))
    prune_embeddings(model.encoder, keep, id_map)
    model.set_id_map(id_map, int(tokenizer.unk_token_id))
    return PruneReport(original_tokens=vocab, kept_tokens=len(keep), parameters_before=before,
                       parameters_after=count_parameters(model), **counts)


def unknown_tokens(id_map, input_ids, unk_id: int) -> int:
    """How many of ``input_ids`` (old ids) a pruned model reads as ``[UNK]`` though the tokenizer did not
    produce ``[UNK]``: the text the student cannot see. Torch tensors or numpy arrays alike (``id_map`` None:
    not pruned, 0)."""
    if id_map is None:
        return 0
    new_unk = int(id_map[unk_id])
    return int(((id_map[input_ids] == new_unk) & (input_ids != unk_id)).sum())


def vocabulary_figures(model, tokenizer, texts: list[str], max_length: int) -> dict | None:
    """For a pruned classifier: its kept vocabulary, and how many of ``texts``' tokens it reads as [UNK] that
    the full vocabulary had (``unknown_token_rate``: their share of all tokens; ``texts_with_unknown``)."""
    if model.id_map is None:
        return None
    unk, lost, total, texts_hit = int(tokenizer.unk_token_id), 0, 0, 0
    for start in range(0, len(texts), 256):
        batch = tokenizer(list(texts[start:start + 256]), truncation=True, max_length=max_length)["input_ids"]
        for ids in batch:
            count = unknown_tokens(model.id_map, torch.as_tensor(ids), unk)
            lost, total, texts_hit = lost + count, total + len(ids), texts_hit + bool(count)
    return {"kept_tokens": int(model.get_input_embeddings().num_embeddings), "unknown_tokens": lost,
            "unknown_token_rate": lost / total if total else 0.0, "texts_with_unknown": texts_hit,
            "texts": len(texts)}
