"""Re-ranking models: score a (query, passage) pair; saving, loading and batched scoring.

Three architectures behind one interface (``encode`` a batch of pairs into the tensors named by ``INPUTS``,
``forward`` → one score per pair, a log-odds of relevance, so ``σ(score)`` is the model's relevance probability):

- :class:`CrossEncoder`: an encoder reads ``[CLS] query [SEP] passage [SEP]``, mean-pools, one linear unit.
- :class:`BiEncoder`: the encoder embeds query and passage apart (mean pooling, as sentence-transformers
  checkpoints were trained); score = ``w · cos(q, p) + b``. A sentence-embedding checkpoint is a strong
  re-ranker as it is (measured on FiQA: all-mpnet-base-v2 0.91 nDCG@10 zero-shot, BM25 0.53), where a
  cross-encoder started from the same weights and fine-tuned on 200 queries reached 0.54.
- :class:`MonoT5`: a sequence-to-sequence model reads ``Query: q Document: d Relevant:`` and the score is
  ``logit("true") − logit("false")`` at the first decoder step (Nogueira et al. 2020, "Document Ranking with a
  Pretrained Sequence-to-Sequence Model"), so a real monoT5/T5 checkpoint works as it was trained.

A saved re-ranker is a folder::

    model/            the Hugging Face model (save_pretrained): encoder, or seq2seq model
    tokenizer/        its tokenizer
    head.safetensors  the scoring unit (cross-encoder: weight [1, hidden], bias [1]; bi-encoder: the cosine's scale)
    projection.safetensors  a bi-encoder's projection into its teacher's embedding space (weight [dim, hidden]),
                      where it was distilled at the embedding level
    reranker.json     kind, max_length, base model, parameter count (+ monoT5's true/false token ids)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from stillhouse.distill.representation import least_squares_projection
from stillhouse.errors import ModelError
from stillhouse.models.hf import count_parameters, load_pretrained, quiet_transformers
from stillhouse.progress import progress

RERANKER_FILE = "reranker.json"
PROJECTION_FILE = "projection.safetensors"
MONOT5_TEMPLATE = "Query: {query} Document: {passage} Relevant:"


@dataclass(frozen=True)
class RerankerInfo:
    """What a saved re-ranker needs besides its weights."""

    kind: str  # "cross_encoder" | "bi_encoder" | "monot5"
    max_length: int = 256
    base_model: str = ""
    true_token_id: int | None = None
    false_token_id: int | None = None


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[batch, hidden]`` mean of the real tokens' states ``[batch, tokens, hidden]``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class CrossEncoder(nn.Module):
    """Encoder over the (query, passage) pair → mean-pooled → linear → score ``[batch]``."""

    INPUTS = ("input_ids", "attention_mask")

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 1)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler.requires_grad_(False)  # never used (mean pooling); DDP rejects params without grad

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    @staticmethod
    def encode(tokenizer, queries: list[str], passages: list[str], max_length: int) -> dict[str, torch.Tensor]:
        # longest_first trims whichever side is longer: a long passage loses its tail, never the whole query
        return tokenizer(queries, passages, padding=True, truncation="longest_first", max_length=max_length,
                         return_tensors="pt")

    def head_parameters(self):
        """What the training loop moves at the head learning rate (``distill.training``)."""
        return self.head.parameters()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(mean_pool(hidden, attention_mask)).squeeze(-1)


class BiEncoder(nn.Module):
    """Encoder embeds query and passage apart → ``w · cos + b`` → score ``[batch]``.

    ``w`` starts at 20 (the scale sentence-transformers train with: cosines of related texts differ by a few
    hundredths, and ×20 makes that a softmax-sized margin) and ``b`` at −10; both are learnt (the head).

    ``projection`` (optional, no bias) maps the pooled embedding into another space before the cosine: a
    student distilled at the embedding level learns the teacher's space through it (:func:`fit_projection`).
    """

    INPUTS = ("input_ids", "attention_mask", "passage_input_ids", "passage_attention_mask", "query_index")

    def __init__(self, encoder: nn.Module, projection: nn.Linear | None = None):
        super().__init__()
        self.encoder = encoder
        self.projection = projection
        self.head = nn.Linear(1, 1)
        with torch.no_grad():
            self.head.weight.fill_(20.0)
            self.head.bias.fill_(-10.0)
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler.requires_grad_(False)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    @staticmethod
    def encode(tokenizer, queries: list[str], passages: list[str], max_length: int) -> dict[str, torch.Tensor]:
        # A training step holds each query with all its candidates: embed each distinct query once.
        distinct = list(dict.fromkeys(queries))
        q = tokenizer(distinct, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        p = tokenizer(passages, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        position = {query: i for i, query in enumerate(distinct)}
        return {"input_ids": q["input_ids"], "attention_mask": q["attention_mask"],
                "passage_input_ids": p["input_ids"], "passage_attention_mask": p["attention_mask"],
                "query_index": torch.tensor([position[query] for query in queries], dtype=torch.long)}

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pooled(input_ids, attention_mask)
        return nn.functional.normalize(self.projection(pooled) if self.projection is not None else pooled, dim=-1)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean-pooled encoder states ``[batch, hidden]``, before any projection."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return mean_pool(hidden, attention_mask)

    def head_parameters(self):
        """What the training loop moves at the head learning rate (``distill.training``)."""
        return self.head.parameters()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                passage_input_ids: torch.Tensor | None = None, passage_attention_mask: torch.Tensor | None = None,
                query_index: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[pairs]``: passage ``i`` against query ``query_index[i]`` (default: query ``i``). Without
        passages: the texts' unit embeddings ``[batch, dim]`` (embedding distillation trains through here, so
        a data-parallel wrapper sees the forward pass)."""
        queries = self.embed(input_ids, attention_mask)
        if passage_input_ids is None:
            return queries
        if query_index is not None:
            queries = queries[query_index]
        cosine = (queries * self.embed(passage_input_ids, passage_attention_mask)).sum(-1)
        return self.head(cosine.unsqueeze(-1)).squeeze(-1)


class MonoT5(nn.Module):
    """Seq2seq model → ``logit(true) − logit(false)`` at the first decoder step → score ``[batch]``."""

    INPUTS = ("input_ids", "attention_mask")

    def __init__(self, model: nn.Module, true_token_id: int, false_token_id: int):
        super().__init__()
        self.model = model
        self.true_token_id, self.false_token_id = true_token_id, false_token_id

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    @staticmethod
    def encode(tokenizer, queries: list[str], passages: list[str], max_length: int) -> dict[str, torch.Tensor]:
        texts = [MONOT5_TEMPLATE.format(query=q, passage=p) for q, p in zip(queries, passages)]
        return tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")

    def head_parameters(self):
        """None: the answer words' logits come from the decoder itself, trained at the encoder's rate."""
        return iter(())

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        start = torch.full((input_ids.shape[0], 1), self.model.config.decoder_start_token_id,
                           dtype=torch.long, device=input_ids.device)
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=start).logits[:, 0]
        return logits[:, self.true_token_id] - logits[:, self.false_token_id]


def word_token_id(tokenizer, word: str) -> int:
    """The id of ``word`` as one token (monoT5's "true"/"false"); a word the vocabulary splits is an error."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ModelError(f"the tokenizer splits {word!r} into {len(ids)} tokens; monoT5 scores one-token words",
                         "use a tokenizer whose vocabulary has `true` and `false` as single tokens (T5's does)")
    return ids[0]


ARCHITECTURES = {"cross_encoder": CrossEncoder, "bi_encoder": BiEncoder}


def new_monot5(model: nn.Module, tokenizer) -> MonoT5:
    return MonoT5(model, word_token_id(tokenizer, "true"), word_token_id(tokenizer, "false"))


def tiny_t5(tokenizer, d_model: int = 128, layers: int = 2, heads: int = 2, d_ff: int = 512) -> nn.Module:
    """A small random-init T5 over ``tokenizer``'s vocabulary (tests, and a student without a T5 checkpoint)."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=len(tokenizer), d_model=d_model, d_kv=d_model // heads, d_ff=d_ff,
                      num_layers=layers, num_decoder_layers=1, num_heads=heads,
                      pad_token_id=tokenizer.pad_token_id, decoder_start_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.sep_token_id or tokenizer.eos_token_id)
    return T5ForConditionalGeneration(config)


def load_seq2seq(ref: str):
    """A seq2seq model (e.g. a T5 or monoT5 checkpoint) and its tokenizer from a model reference."""
    from transformers import AutoModelForSeq2SeqLM

    return load_pretrained(ref, AutoModelForSeq2SeqLM,
                           "use a local T5/monoT5 folder, or a hub name with network access")


def save_reranker(model: CrossEncoder | BiEncoder | MonoT5, tokenizer, info: RerankerInfo, folder: str | Path) -> None:
    """Write the re-ranker folder (callers wrap this in :func:`stillhouse.data.io.atomic_dir`)."""
    folder = Path(folder)
    if isinstance(model, (CrossEncoder, BiEncoder)):
        model.encoder.save_pretrained(folder / "model")
        save_file({"weight": model.head.weight.detach().contiguous().cpu(),
                   "bias": model.head.bias.detach().contiguous().cpu()}, str(folder / "head.safetensors"))
        if getattr(model, "projection", None) is not None:
            save_file({"weight": model.projection.weight.detach().contiguous().cpu()},
                      str(folder / PROJECTION_FILE))
        info = RerankerInfo(**{**asdict(info), "kind": "cross_encoder" if isinstance(model, CrossEncoder)
                               else "bi_encoder"})
    else:
        model.model.save_pretrained(folder / "model")
        info = RerankerInfo(**{**asdict(info), "kind": "monot5", "true_token_id": model.true_token_id,
                               "false_token_id": model.false_token_id})
    tokenizer.save_pretrained(folder / "tokenizer")
    meta = {**asdict(info), "num_parameters": count_parameters(model)}
    (folder / RERANKER_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")


def read_reranker_info(folder: str | Path) -> RerankerInfo:
    path = Path(folder) / RERANKER_FILE
    if not path.is_file():
        raise ModelError(f"{folder} is not a Stillhouse re-ranker (no {RERANKER_FILE})",
                         "point to a folder written by a re-ranking run (teacher/ or student/)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta.pop("num_parameters", None)
    return RerankerInfo(**meta)


def load_reranker(folder: str | Path) -> tuple[CrossEncoder | MonoT5, object, RerankerInfo]:
    """Load a saved re-ranker folder → (model in eval mode, tokenizer, info)."""
    from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer

    quiet_transformers()
    folder = Path(folder)
    info = read_reranker_info(folder)
    if info.kind in ("cross_encoder", "bi_encoder"):
        if info.kind == "cross_encoder":
            model = CrossEncoder(AutoModel.from_pretrained(folder / "model"))
        else:
            model = BiEncoder(AutoModel.from_pretrained(folder / "model"), _load_projection(folder))
        model.head.load_state_dict(load_file(str(folder / "head.safetensors")))
    else:
        model = MonoT5(AutoModelForSeq2SeqLM.from_pretrained(folder / "model"), info.true_token_id,
                       info.false_token_id)
    return model.eval(), AutoTokenizer.from_pretrained(folder / "tokenizer"), info


def _load_projection(folder: Path) -> nn.Linear | None:
    path = folder / PROJECTION_FILE
    if not path.is_file():
        return None
    weight = load_file(str(path))["weight"]
    projection = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    projection.load_state_dict({"weight": weight})
    return projection


def fit_projection(model: BiEncoder, tokenizer, texts: list[str], targets: torch.Tensor, max_length: int,
                   batch_size: int = 32, ridge: float = 1e-3) -> None:
    """Give ``model`` a projection from its pooled embedding to ``targets``' space ``[texts, dim]`` (a teacher's
    embeddings of ``texts``), fitted by least squares (a small ridge keeps it well posed with few texts), so
    embedding distillation starts from a linear map between the two spaces rather than a random one.

    The fit is on the student's *unit* embeddings: only directions score, and fitted on the raw pooled vectors
    (whose norms vary with text length) the map matched the teacher's vectors better but ranked worse. Measured
    on FiQA (1,096 passages and training questions, 200 held-out questions' BM25 top 30): all-MiniLM-L6-v2
    mapped into all-mpnet-base-v2's space this way re-ranks as it does in its own (nDCG@10 0.826 vs 0.827),
    fitted on the pooled vectors 0.807; four embedding epochs from a unit-vector fit reached 0.845, from the
    pooled fit 0.829."""
    model.projection = None  # the student's own unit embeddings
    x = torch.from_numpy(embed_texts(model, tokenizer, texts, max_length, batch_size))
    model.projection = least_squares_projection(x, targets, ridge)


@torch.inference_mode()
def score_pairs(model: CrossEncoder | MonoT5, tokenizer, queries: list[str], passages: list[str], max_length: int,
                batch_size: int = 32, desc: str | None = None, device: str = "cpu") -> np.ndarray:
    """Scores ``[n]`` for the pairs ``(queries[i], passages[i])``, in input order (batched by length)."""
    model = model.to(device).eval()
    if isinstance(model, BiEncoder):
        return _score_bi_encoder(model, tokenizer, queries, passages, max_length, batch_size, desc, device)
    order = np.argsort([len(q) + len(p) for q, p in zip(queries, passages)], kind="stable")
    scores = np.zeros(len(queries), dtype=np.float32)
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in progress(batches, desc=desc, total=len(batches)) if desc else batches:
        enc = model.encode(tokenizer, [queries[i] for i in batch], [passages[i] for i in batch], max_length)
        enc = {k: v.to(device) for k, v in enc.items() if k in model.INPUTS}
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            scores[batch] = model(**enc).float().cpu().numpy()
    return scores


@torch.inference_mode()
def embed_texts(model: BiEncoder, tokenizer, texts: list[str], max_length: int, batch_size: int = 32,
                desc: str | None = None, device: str = "cpu") -> np.ndarray:
    """Unit embeddings ``[len(texts), dim]`` of ``texts`` by a bi-encoder, in input order."""
    model = model.to(device).eval()
    embedded = _embed_unique(model, tokenizer, texts, max_length, batch_size, desc, device)
    return torch.stack([embedded[t] for t in texts]).cpu().numpy() if texts else np.zeros((0, 0), np.float32)


def _embed_unique(model: BiEncoder, tokenizer, texts: list[str], max_length: int, batch_size: int,
                  desc: str | None, device: str) -> dict[str, torch.Tensor]:
    unique = sorted(set(texts), key=len)
    batches = [unique[i:i + batch_size] for i in range(0, len(unique), batch_size)]
    out: dict[str, torch.Tensor] = {}
    for batch in progress(batches, desc=desc, total=len(batches)) if desc else batches:
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            vectors = model.embed(enc["input_ids"].to(device), enc["attention_mask"].to(device)).float()
        out.update(zip(batch, vectors))
    return out


def _score_bi_encoder(model: BiEncoder, tokenizer, queries: list[str], passages: list[str], max_length: int,
                      batch_size: int, desc: str | None, device: str) -> np.ndarray:
    """A bi-encoder embeds each distinct query and passage once (a query's 30 candidates share its embedding;
    a passage that is a candidate of many queries is embedded once), then scores every pair."""
    if not queries:
        return np.zeros(0, dtype=np.float32)
    embedded = _embed_unique(model, tokenizer, queries + passages, max_length, batch_size,
                             f"{desc} (distinct texts)" if desc else None, device)
    q = torch.stack([embedded[t] for t in queries])
    p = torch.stack([embedded[t] for t in passages])
    return model.head((q * p).sum(-1, keepdim=True)).squeeze(-1).float().cpu().numpy()
