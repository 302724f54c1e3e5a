"""A packaged classifier served: texts in, a label and the probability of every label out (``/classify``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stillhouse.evaluate.metrics import softmax
from stillhouse.models.classifier import CLASSIFIER_FILE, encode_texts, load_classifier, read_classifier_info
from stillhouse.models.onnx_runtime import ONNX_FILE, load_onnx_classifier
from stillhouse.serve.schemas import ClassifyResponse, check_classify
from stillhouse.serve.student import STUDENT_FOLDER, ServedStudent, Serving, stored_identity


@dataclass
class ServedClassifier(ServedStudent):
    model: object = None
    tokenizer: object = None
    max_length: int = 0
    temperature: float = 1.0  # temperature scaling fitted at evaluation (classifier.json)
    runtime: str = "torch"  # packaged with its ONNX export: onnx or onnx-int8 (ONNX Runtime)
    task = "classification"

    @classmethod
    def load(cls, stored) -> ServedClassifier:
        """The student of a stored model, in the runtime its evaluation measured it in."""
        folder = Path(stored.path) / STUDENT_FOLDER
        if (folder / ONNX_FILE).is_file():
            info = read_classifier_info(folder)
            model = load_onnx_classifier(folder)
            return cls(**stored_identity(stored), labels=info.labels, model=model, tokenizer=model.tokenizer,
                       max_length=info.max_length, temperature=info.temperature,
                       runtime=stored.info.labels.get("runtime", "onnx"))
        model, tokenizer, info = load_classifier(folder)
        return cls(**stored_identity(stored), labels=info.labels, model=model, tokenizer=tokenizer,
                   max_length=info.max_length, temperature=info.temperature)

    def predict(self, texts: list[str]) -> list[dict]:
        """One ``{label, confidence, probabilities}`` per text, in order."""
        if not texts:
            return []
        logits = (encode_texts(self.model, self.tokenizer, texts, self.max_length) if self.runtime == "torch"
                  else self.model.logits(texts))
        probs = softmax(logits, self.temperature)
        best = probs.argmax(1)
        return [{"label": self.labels[k], "confidence": float(p[k]),
                 "probabilities": {label: float(v) for label, v in zip(self.labels, np.round(p, 6))}}
                for k, p in zip(best, probs)]

    def warm_up(self, texts: list[str]) -> None:
        self.predict(texts)


SERVING = Serving(student_file=CLASSIFIER_FILE, route="/classify",
                  service="stillhouse.serving.classification_service:Classifier", check=check_classify,
                  response=ClassifyResponse, load=ServedClassifier.load,
                  labels=lambda folder: read_classifier_info(folder).labels, chainable=True)
