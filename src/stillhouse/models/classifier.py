"""Text classification: an encoder, a pooling, a linear head; saving, loading and batched inference.

A saved classifier is a folder::

    encoder/           the Hugging Face encoder (save_pretrained)
    tokenizer/         its tokenizer
    head.safetensors   head weight [num_labels, hidden] and bias [num_labels]
    classifier.json    labels, pooling, max_length, parameter count, base model, pruning (if pruned)
    vocab_map.safetensors  a pruned vocabulary's id map (tokenizer id → embedding row; see models/prune.py)
    projection.safetensors  during representation distillation only: the map from the student's sentence
                       embedding into its teacher's (weight [teacher dim, hidden]; distill/representation.py)

Teacher and student share this one format, so every step (labelling, distillation, evaluation, serving)
loads either the same way.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stillhouse.errors import ModelError
from stillhouse.models.hf import count_parameters, quiet_transformers
from stillhouse.models.prune import unknown_tokens
from stillhouse.progress import progress

CLASSIFIER_FILE = "classifier.json"  # what makes a folder a saved classifier
VOCAB_MAP_FILE = "vocab_map.safetensors"
PROJECTION_FILE = "projection.safetensors"


@dataclass(frozen=True)
class ClassifierInfo:
    """What a saved classifier needs besides its weights."""

    labels: list[str]
    pooling: str = "mean"
    max_length: int = 128
    base_model: str = ""
    # Divides the logits before the softmax in serving (temperature scaling fitted at evaluation; 1 = as trained).
    temperature: float = 1.0
    pruning: dict | None = None  # what vocabulary pruning kept (models/prune.py PruneReport), if pruned


class TextClassifier(nn.Module):
    """Encoder → pooled sentence embedding → linear head → logits ``[batch, num_labels]``."""

    def __init__(self, encoder: nn.Module, num_labels: int, pooling: str = "mean"):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        # a pruned vocabulary's tokenizer id → embedding row (a buffer: it moves with the model, is not trained)
        self.register_buffer("id_map", None, persistent=False)
        self.unk_id: int | None = None  # the tokenizer's [UNK] id, with a pruned vocabulary
        self.unknown_tokens = 0  # in inference: tokens read as [UNK] that the full vocabulary had
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)
        # representation distillation's map into the teacher's embedding space (training only; see
        # distill/representation.py): set while the student learns the teacher's embeddings, removed after
        self.projection: nn.Linear | None = None
        if getattr(encoder, "pooler", None) is not None:
            # BERT-style pooler ([CLS] dense + tanh) is never used by `embed`; frozen, it has no gradient to
            # miss, which DistributedDataParallel would otherwise reject ("parameters that did not receive grad").
            encoder.pooler.requires_grad_(False)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def set_id_map(self, id_map: torch.Tensor, unk_id: int) -> None:
        """Read tokenizer ids through ``id_map`` (see :mod:`stillhouse.models.prune`)."""
        self.id_map, self.unk_id = id_map.to(torch.long), int(unk_id)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings ``[batch, hidden]``: mean over real tokens, or the first ([CLS]) token."""
        if self.id_map is not None:
            if not self.training and not torch.compiler.is_exporting():  # a count, not part of an exported graph
                self.unknown_tokens += unknown_tokens(self.id_map, input_ids, self.unk_id)
            input_ids = self.id_map[input_ids]
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def head_parameters(self):
        """What the training loop moves at the head learning rate (``distill.training``)."""
        return self.head.parameters()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                projected: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits ``[batch, labels]``; with ``projected``, also the sentence embedding mapped by
        ``projection`` into the teacher's space ``[batch, teacher dim]`` (one forward pass for both, as
        DistributedDataParallel needs)."""
        embedding = self.embed(input_ids, attention_mask)
        if projected:
            return self.head(embedding), self.projection(embedding)
        return self.head(embedding)


def save_classifier(model: TextClassifier, tokenizer, info: ClassifierInfo, folder: str | Path) -> None:
    """Write the classifier folder (callers wrap this in :func:`stillhouse.data.io.atomic_dir`)."""
    folder = Path(folder)
    model.encoder.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    save_file({"weight": model.head.weight.detach().contiguous().cpu(),
               "bias": model.head.bias.detach().contiguous().cpu()}, str(folder / "head.safetensors"))
    if model.projection is not None:
        save_file({"weight": model.projection.weight.detach().contiguous().cpu()}, str(folder / PROJECTION_FILE))
    if model.id_map is not None:
        save_file({"id_map": model.id_map.detach().cpu().contiguous(), "unk_id": torch.tensor([model.unk_id])},
                  str(folder / VOCAB_MAP_FILE))
    meta = {**asdict(info), "num_parameters": count_parameters(model)}
    (folder / CLASSIFIER_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def read_classifier_info(folder: str | Path) -> ClassifierInfo:
    """The ``classifier.json`` of a saved classifier folder, without loading any weights."""
    folder = Path(folder)
    if not (folder / CLASSIFIER_FILE).is_file():
        raise ModelError(f"{folder} is not a Stillhouse classifier (no classifier.json)",
                         "point to a folder written by a Stillhouse run (teacher/ or student/)")
    meta = json.loads((folder / CLASSIFIER_FILE).read_text(encoding="utf-8"))
    return ClassifierInfo(labels=meta["labels"], pooling=meta["pooling"], max_length=meta["max_length"],
                          base_model=meta.get("base_model", ""), temperature=float(meta.get("temperature", 1.0)),
                          pruning=meta.get("pruning"))


def set_temperature(folder: str | Path, temperature: float) -> None:
    """Record the serving temperature in a saved classifier folder's ``classifier.json``."""
    path = Path(folder) / CLASSIFIER_FILE
    meta = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**meta, "temperature": float(temperature)}, indent=2), encoding="utf-8")


def load_classifier(folder: str | Path) -> tuple[TextClassifier, object, ClassifierInfo]:
    """Load a saved classifier folder → (model in eval mode, tokenizer, info)."""
    from transformers import AutoModel, AutoTokenizer

    quiet_transformers()
    folder = Path(folder)
    info = read_classifier_info(folder)
    model = TextClassifier(AutoModel.from_pretrained(folder / "encoder"), len(info.labels), info.pooling)
    model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    if (folder / PROJECTION_FILE).is_file():
        weight = load_file(str(folder / PROJECTION_FILE))["weight"]
        model.projection = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        model.projection.load_state_dict({"weight": weight})
    if (folder / VOCAB_MAP_FILE).is_file():
        saved = load_file(str(folder / VOCAB_MAP_FILE))
        model.set_id_map(saved["id_map"], int(saved["unk_id"][0]))
    return model.eval(), AutoTokenizer.from_pretrained(folder / "tokenizer"), info


def tokenize(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def in_length_order(texts: list[str], batch_size: int, run, width: int, desc: str | None = None) -> np.ndarray:
    """``run(batch_texts) → [len(batch), width]`` over ``texts`` in length order, so that each batch pads to
    similar lengths (less wasted compute on text of varied length), its rows put back in input order →
    ``[len(texts), width]`` float32."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    results: list[np.ndarray] = [None] * len(texts)  # type: ignore[list-item]
    batches = [order[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    for batch in progress(batches, desc=desc, total=len(batches)) if desc else batches:
        for i, row in zip(batch, run([texts[i] for i in batch])):
            results[i] = row
    if not texts:
        return np.zeros((0, width), dtype=np.float32)
    return np.stack(results).astype(np.float32)


@torch.inference_mode()
def encode_texts(model: TextClassifier, tokenizer, texts: list[str], max_length: int, batch_size: int = 64,
                 output: str = "logits", desc: str | None = None, device: str = "cpu") -> np.ndarray:
    """Logits (pooled embeddings with ``output="embeddings"``; both, ``[logits | embedding]`` side by side from
    one forward pass, with ``output="both"``) for ``texts``, in input order, batched by length
    (:func:`in_length_order`)."""
    model = model.to(device).eval()

    def run(batch: list[str]) -> np.ndarray:
        enc = tokenize(tokenizer, batch, max_length)
        enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            if output == "logits":
                out = model(**enc)
            else:
                embedding = model.embed(**enc)
                out = embedding if output == "embeddings" else torch.cat([model.head(embedding), embedding], 1)
        return out.float().cpu().numpy()

    width = {"logits": model.head.out_features, "embeddings": model.head.in_features,
             "both": model.head.out_features + model.head.in_features}[output]
    return in_length_order(texts, batch_size, run, width, desc)
