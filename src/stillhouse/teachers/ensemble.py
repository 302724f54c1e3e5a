"""An ensemble teacher: members loaded from its folder, weights that sum to 1, and how their answers mix.

Every task's ensemble is this one object (``teacher.json`` with ``kind: ensemble`` names the member folders and
their weights); a task adds only the verb it asks of its members and the mix that fits its outputs:
:func:`ensemble_logits` for label logits, :func:`mean_probability_logit` for relevance log-odds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from stillhouse.data.fingerprint import dir_fingerprint
from stillhouse.evaluate.metrics import softmax


def ensemble_logits(member_logits: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """log(Σ_m w_m softmax(z_m)) for ``[n, K]`` member logits and weights summing to 1: a proper distribution's
    log, so the probabilities it implies sum to 1 exactly."""
    mixed = sum(w * softmax(np.asarray(z, dtype=np.float64)) for z, w in zip(member_logits, weights))
    return np.log(np.clip(mixed, 1e-30, 1.0)).astype(np.float32)


def mean_probability_logit(member_scores: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """``logit(Σ_m w_m σ(s_m))`` for ``[n]`` member scores (log-odds) and weights summing to 1."""
    mixed = sum(w / (1 + np.exp(-np.asarray(s, dtype=np.float64))) for s, w in zip(member_scores, weights))
    mixed = np.clip(mixed, 1e-7, 1 - 1e-7)
    return np.log(mixed / (1 - mixed)).astype(np.float32)


class Ensemble:
    """The members of the ensemble in ``folder`` (each loaded by ``load_member(member_folder, device)``), their
    normalised weights, a name that lists them, and the parameter count where every member's is known."""

    def __init__(self, folder: Path, description: dict, load_member: Callable, device: str = "cpu"):
        self.members = [load_member(folder / name, device) for name in description["members"]]
        weights = np.asarray(description["weights"], dtype=np.float64)
        self.weights = weights / weights.sum()
        self.name = "ensemble(" + ", ".join(f"{m.name}*{w:.2f}" for m, w in zip(self.members, self.weights)) + ")"
        self.fingerprint = dir_fingerprint(folder)
        sizes = [getattr(m, "parameters", None) for m in self.members]
        self.parameters = sum(sizes) if all(s is not None for s in sizes) else None

    def mixed(self, verb: str, mix: Callable, *inputs, desc: str | None = None) -> np.ndarray:
        """Each member's ``verb(*inputs, desc=...)``, mixed by ``mix(outputs, weights)``."""
        return mix([getattr(m, verb)(*inputs, desc=f"{desc} [{m.name}]" if desc else None) for m in self.members],
                   self.weights)
