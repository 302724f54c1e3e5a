"""A packaged student loaded from the BentoML model store: a classifier answers texts with labels and
probabilities, a re-ranker scores (query, passage) pairs, a tabular student scores rows of raw columns.
What a stored student is comes from its ``task`` label, written by the registry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stillhouse.errors import ModelError
from stillhouse.evaluate.metrics import softmax
from stillhouse.models.onnx_runtime import ONNX_FILE


@dataclass
class ServedStudent:
    model: object
    tokenizer: object
    labels: list[str]
    max_length: int
    tag: str
    version: str
    task: str = "classification"
    temperature: float = 1.0  # temperature scaling fitted at evaluation (classifier.json, tabular.json)
    metadata: dict | None = None  # the stored model's lineage (tabular: its Feast features, if any)
    runtime: str = "torch"  # a classifier packaged with its ONNX export: onnx or onnx-int8 (ONNX Runtime)

    @staticmethod
    def check_tag(tag: str):
        """The stored BentoML model ``tag`` (``name`` alone or ``name:latest`` = newest), or a clear error."""
        import bentoml
        from bentoml.exceptions import BentoMLException

        try:
            stored = bentoml.models.get(tag)
        except BentoMLException:  # NotFound, or a malformed tag
            raise ModelError(f"no model `{tag}` in the BentoML model store",
                             "`stillhouse models list` shows the packaged students; run a distillation first") \
                from None
        folder = Path(stored.path) / "student"
        if not any((folder / name).is_file() for name in ("classifier.json", "reranker.json", "tabular.json")):
            raise ModelError(f"model `{tag}` is not a packaged Stillhouse student (no student/ folder)",
                             "serve a tag written by `stillhouse run`")
        return stored

    @classmethod
    def task_of(cls, tag: str) -> str:
        """The task of the stored student ``tag`` (its ``task`` label), without loading it."""
        stored = cls.check_tag(tag)
        label = stored.info.labels.get("task")
        if label:
            return label
        # stored before the registry wrote the label: tell by the student folder
        return "reranking" if (Path(stored.path) / "student" / "reranker.json").is_file() else "classification"

    @classmethod
    def labels_of(cls, tag: str) -> list[str]:
        """The labels of the stored student ``tag`` (none for a re-ranker), without loading its weights."""
        from stillhouse.models.classifier import read_classifier_info
        from stillhouse.tasks.tabular.model import read_tabular_info

        task = cls.task_of(tag)
        folder = Path(cls.check_tag(tag).path) / "student"
        if task == "reranking":
            return []
        return (read_tabular_info(folder) if task == "tabular" else read_classifier_info(folder)).labels

    @classmethod
    def from_store(cls, tag: str) -> ServedStudent:
        """Load the student with BentoML model tag ``tag``."""
        from stillhouse.models.classifier import load_classifier

        stored = cls.check_tag(tag)
        folder = Path(stored.path) / "student"
        task = cls.task_of(tag)
        if task == "tabular":
            from stillhouse.tasks.tabular.model import load_tabular

            student = load_tabular(folder)
            return cls(student, None, student.info.labels, 0, str(stored.tag), stored.tag.version or "", "tabular",
                       student.info.temperature, dict(stored.info.metadata))
        if task == "reranking":
            from stillhouse.models.reranker import load_reranker

            model, tokenizer, ranker = load_reranker(folder)
            return cls(model, tokenizer, [], ranker.max_length, str(stored.tag), stored.tag.version or "", "reranking")
        if (folder / ONNX_FILE).is_file():  # the runtime the evaluation measured it in
            from stillhouse.models.onnx_runtime import load_onnx_classifier
            from stillhouse.models.classifier import read_classifier_info

            info = read_classifier_info(folder)
            model = load_onnx_classifier(folder)
            return cls(model, model.tokenizer, info.labels, info.max_length, str(stored.tag),
                       stored.tag.version or "", temperature=info.temperature,
                       runtime=stored.info.labels.get("runtime", "onnx"))
        model, tokenizer, info = load_classifier(folder)
        return cls(model, tokenizer, info.labels, info.max_length, str(stored.tag), stored.tag.version or "",
                   temperature=info.temperature)

    def predict(self, texts: list[str]) -> list[dict]:
        """One ``{label, confidence, probabilities}`` per text, in order."""
        from stillhouse.models.classifier import encode_texts

        if self.task != "classification":
            raise ModelError(f"{self.tag} is a re-ranker; it scores (query, passage) pairs", "use /rerank")
        if not texts:
            return []
        logits = (encode_texts(self.model, self.tokenizer, texts, self.max_length) if self.runtime == "torch"
                  else self.model.logits(texts))
        probs = softmax(logits, self.temperature)
        best = probs.argmax(1)
        return [{"label": self.labels[k], "confidence": float(p[k]),
                 "probabilities": {label: float(v) for label, v in zip(self.labels, np.round(p, 6))}}
                for k, p in zip(best, probs)]

    def score(self, pairs: list[dict]) -> list[float]:
        """One relevance score per ``{"query", "passage"}`` pair, in order (re-rankers only)."""
        from stillhouse.models.reranker import score_pairs

        if self.task != "reranking":
            raise ModelError(f"{self.tag} is a classifier; it does not score passages", "use /classify")
        if not pairs:
            return []
        scores = score_pairs(self.model, self.tokenizer, [p["query"] for p in pairs], [p["passage"] for p in pairs],
                             self.max_length)
        return [float(s) for s in scores]

    def score_rows(self, rows: list[dict]) -> list[dict]:
        """One ``{label, probability, probabilities, contributions}`` per row of raw column values (tabular
        students only); a row that lacks a column or holds a non-number in a numeric one is a
        :class:`~stillhouse.errors.DataError` naming the column."""
        if self.task != "tabular":
            raise ModelError(f"{self.tag} is not a tabular student", "use /classify or /rerank")
        if not rows:
            return []
        student, info = self.model, self.model.info
        probs = softmax(student.logits(rows), self.temperature)
        positive = info.labels.index(info.positive) if info.positive in info.labels else None
        contributions = student.contributions(rows, info.contributions)
        out = []
        for p, why in zip(probs, contributions):
            best = int(p.argmax())
            out.append({"label": info.labels[best], "probability": float(p[positive if positive is not None
                                                                            else best]),
                        "probabilities": {label: float(v) for label, v in zip(info.labels, np.round(p, 6))},
                        "contributions": why})
        return out

    def columns(self) -> list[str]:
        """The raw columns a tabular student reads."""
        pre = self.model.preprocessor
        return [*pre.numeric, *pre.categorical]
