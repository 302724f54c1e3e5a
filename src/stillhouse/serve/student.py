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
        if not (Path(stored.path) / "student" / "classifier.json").is_file():
            raise ModelError(f"model `{tag}` is not a packaged Stillhouse student (no student/ folder)",
                             "serve a tag written by `stillhouse run`")
        return stored

    @classmethod
    def labels_of(cls, tag: str) -> list[str]:
        """The labels of the stored student ``tag``, without loading its weights."""
        from stillhouse.tasks.classification import read_classifier_info

        return read_classifier_info(Path(cls.check_tag(tag).path) / "student").labels

    @classmethod
    def from_store(cls, tag: str) -> ServedStudent:
        """Load the student with BentoML model tag ``tag``."""
        from stillhouse.tasks.classification import load_classifier

        stored = cls.check_tag(tag)
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
