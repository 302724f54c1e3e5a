"""Distillation losses as pure functions (no I/O, no state), unit-tested against hand-computed values.

Hinton, Vinyals & Dean (2015), "Distilling the Knowledge in a Neural Network": the student matches the
teacher's temperature-softened distribution; the T² factor keeps the soft-target gradients on the same
scale as the hard-label ones when T changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-row ``T² · KL(softmax(z_t/T) ‖ softmax(z_s/T))``.

    Shapes: logits ``[batch, classes]`` → ``[batch]``.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return temperature**2 * kl


def distillation_loss(student_logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None,
                      alpha: float, temperature: float, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows of the Hinton loss, with rows that have no hard label handled apart.

    - labelled row (``label >= 0``):  ``α·CE(y, softmax(z_s)) + (1−α)·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T))``
    - unlabelled row (``label == -1``, pool or synthetic): ``T²·KL(...)`` alone — there is no hard label
      to trade it against, so it is not scaled by ``1−α``.
    - ``teacher_logits is None``: plain cross-entropy on the labelled rows (teacher fine-tuning, and the
      hard-label baseline student).

    ``weights`` ``[batch]`` (optional) scales each row's term; the mean still divides by the number of rows,
    so a weight below 1 makes a row count for less (e.g. synthetic rows, ``distillation.synthetic_weight``)
    instead of being renormalised away in a batch of such rows alone.

    Shapes: ``student_logits`` ``[batch, classes]``, ``labels`` ``[batch]`` (long, −1 = no label),
    ``teacher_logits`` ``[batch, classes]`` or None → scalar.
    """
    labelled = labels >= 0
    ce = F.cross_entropy(student_logits, labels.clamp(min=0), reduction="none")
    if teacher_logits is None:
        if not labelled.any():
            raise ValueError("hard-label training got a batch with no labelled rows")
        return ce[labelled].mean()
    kl = soft_kl(student_logits, teacher_logits, temperature)
    per_row = torch.where(labelled, alpha * ce + (1 - alpha) * kl, kl)
    if weights is not None:
        per_row = per_row * weights
    return per_row.mean()
