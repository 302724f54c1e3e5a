"""Loading any saved teacher as one interface: texts in, logits over the label set out.

A teacher folder is either a classifier folder (the fine-tuned encoder, ``classifier.json``) or a
``teacher.json`` folder describing a prompted LLM or an endpoint (:mod:`stillhouse.teachers.llm`), or an
ensemble of member folders (:class:`EnsembleTeacher`, here: it loads its members through :func:`load_teacher`). Every consumer (soft-labelling, synthesis filtering, evaluation) goes
through :func:`load_teacher`, so adding a kind of teacher changes nothing downstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.data.io import read_json
from stillhouse.errors import ModelError
from stillhouse.models.classifier import encode_texts, load_classifier
from stillhouse.models.hf import count_parameters
from stillhouse.teachers import TEACHER_FILE
from stillhouse.teachers.ensemble import Ensemble, ensemble_logits
from stillhouse.teachers.llm import load_described_teacher


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

    def logits_and_embeddings(self, texts: list[str], desc: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Logits and pooled sentence embeddings from one forward pass (representation distillation needs both)."""
        both = encode_texts(self.model, self.tokenizer, texts, self.info.max_length, self.batch_size, "both",
                            desc=desc, device=self.device)
        return both[:, :len(self.labels)], both[:, len(self.labels):]


def load_teacher(folder: str | Path, device: str = "cpu") -> Teacher:
    """The teacher saved in ``folder`` (see the module docstring for the two folder kinds)."""
    folder = Path(folder)
    if (folder / TEACHER_FILE).is_file():
        description = read_json(folder / TEACHER_FILE)
        if description.get("kind") == "ensemble":
            return EnsembleTeacher(folder, description, device)

        return load_described_teacher(folder, device, description)
    return EncoderTeacher(folder, device)


class EnsembleTeacher(Ensemble):
    """Weighted average of its members' probabilities; logits are the log of that average."""

    def __init__(self, folder: Path, description: dict, device: str = "cpu"):
        super().__init__(folder, description, load_teacher, device)
        self.labels = description["labels"]
        for member in self.members:
            if list(member.labels) != list(self.labels):
                raise ModelError(f"ensemble member {member.name} has labels in another order",
                                 "rebuild the teacher with one label set")

    def logits(self, texts: list[str], desc: str | None = None) -> np.ndarray:
        return self.mixed("logits", ensemble_logits, texts, desc=desc)
