"""Loading any saved teacher as one interface: texts in, logits over the label set out.

A teacher folder is either a classifier folder (the fine-tuned encoder, ``classifier.json``) or a
``teacher.json`` folder describing a prompted LLM, an endpoint, or an ensemble of member folders (see
:mod:`stillhouse.teachers.llm`). Every consumer (soft-labelling, synthesis filtering, evaluation) goes
through :func:`load_teacher`, so adding a kind of teacher changes nothing downstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.tasks.classification import count_parameters, encode_texts, load_classifier


class Teacher(Protocol):
    labels: list[str]
    name: str  # which teacher(s): recorded with every soft label
    fingerprint: str
    parameters: int | None  # None where unknown (a model behind an endpoint)

    def logits(self, texts: list[str], desc: str | None = None) -> np.ndarray:
        """``[len(texts), len(labels)]`` logits (log-probabilities for LLM teachers)."""


class EncoderTeacher:
    """The fine-tuned encoder classifier."""

    def __init__(self, folder: str | Path, device: str = "cpu", batch_size: int = 64):
        self.model, self.tokenizer, self.info = load_classifier(folder)
        self.labels = list(self.info.labels)
        self.name = f"encoder:{self.info.base_model}"
        self.fingerprint = dir_fingerprint(folder)
        self.parameters = count_parameters(self.model)
        self.device, self.batch_size = device, batch_size

    def logits(self, texts: list[str], desc: str | None = None) -> np.ndarray:
        return encode_texts(self.model, self.tokenizer, texts, self.info.max_length, self.batch_size, desc=desc,
                            device=self.device)


def load_teacher(folder: str | Path, device: str = "cpu") -> Teacher:
    """The teacher saved in ``folder`` (see the module docstring for the two folder kinds)."""
    folder = Path(folder)
    if (folder / "teacher.json").is_file():
        from stillhouse.teachers.llm import load_described_teacher

        return load_described_teacher(folder, device)
    return EncoderTeacher(folder, device)


def encoder_folder(folder: str | Path) -> Path | None:
    """The classifier folder of the encoder teacher: ``folder`` itself, or an ensemble's first encoder member."""
    import json

    folder = Path(folder)
    if (folder / "classifier.json").is_file():
        return folder
    described = folder / "teacher.json"
    if described.is_file():
        description = json.loads(described.read_text(encoding="utf-8"))
        for member in description.get("members", []):
            found = encoder_folder(folder / member)
            if found is not None:
                return found
    return None
