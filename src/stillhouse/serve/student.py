"""A packaged student loaded from the BentoML model store, answering texts with labels and probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stillhouse.errors import ModelError
from stillhouse.evaluate.metrics import softmax


@dataclass
class ServedStudent:
    model: object
    tokenizer: object
    labels: list[str]
    max_length: int
    tag: str
    version: str

    @classmethod
    def from_store(cls, tag: str) -> ServedStudent:
        """Load the student with BentoML model tag ``tag`` (``name`` alone or ``name:latest`` = newest)."""
        import bentoml
        from bentoml.exceptions import NotFound

        from stillhouse.tasks.classification import load_classifier

        try:
            stored = bentoml.models.get(tag)
        except NotFound:
            raise ModelError(f"no model `{tag}` in the BentoML model store",
                             "`stillhouse models list` shows the packaged students; run a distillation first") \
                from None
        folder = Path(stored.path) / "student"
        model, tokenizer, info = load_classifier(folder)
        return cls(model, tokenizer, info.labels, info.max_length, str(stored.tag), stored.tag.version or "")

    def predict(self, texts: list[str]) -> list[dict]:
        """One ``{label, confidence, probabilities}`` per text, in order."""
        from stillhouse.tasks.classification import encode_texts

        if not texts:
            return []
        probs = softmax(encode_texts(self.model, self.tokenizer, texts, self.max_length))
        best = probs.argmax(1)
        return [{"label": self.labels[k], "confidence": float(p[k]),
                 "probabilities": {label: float(v) for label, v in zip(self.labels, np.round(p, 6))}}
                for k, p in zip(best, probs)]
