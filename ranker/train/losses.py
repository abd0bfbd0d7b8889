"""Losses over groups of candidates: one row per query, one column per candidate.

The teacher learns from labels (:func:`group_loss`); the student from the teacher's raw logits
(:data:`DISTILLATION_LOSSES`), optionally with a label term (:func:`label_loss`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ranker.io.datasets import POSITIVE_GRADE


def group_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between each group's softmax over its logits and its target distribution, averaged."""
    log_p = logits.view(targets.shape).log_softmax(-1)
    return -(targets.to(log_p.device) * log_p).sum(-1).mean()


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Margin-MSE over every pair of a group: ``mean(((s_i - s_j) - (t_i - t_j))²)``."""
    s = student.unsqueeze(-1) - student.unsqueeze(-2)
    t = teacher.unsqueeze(-1) - teacher.unsqueeze(-2)
    return ((s - t) ** 2).mean()


def listwise_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) per group, times T², averaged."""
    target = (teacher / temperature).softmax(-1)
    log_p = (student / temperature).log_softmax(-1)
    return (target * (target.clamp_min(1e-12).log() - log_p)).sum(-1).mean() * temperature**2


def soft_bce(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The paper's loss: cross-entropy of σ(s) against the teacher's soft probability σ(t/T)."""
    return nn.functional.binary_cross_entropy_with_logits(student, (teacher / temperature).sigmoid())


def no_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """No distillation term: training on labels alone (the label term), the teacher's scores only choosing
    each group's candidates (its top as hard negatives)."""
    return student.sum() * 0.0


DISTILLATION_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "margin-mse": margin_mse, "kl": listwise_kl, "bce": soft_bce, "none": no_distillation}
"""Distillation losses by name (``rank distill --loss``); ``kl`` and ``bce`` take a temperature."""


def label_loss(logits: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each group's softmax against its gains ``2**grade - 1`` (:func:`group_loss`), over the
    groups with a positive."""
    gains = torch.where(grades >= POSITIVE_GRADE, 2.0 ** grades - 1, torch.zeros_like(grades, dtype=torch.float))
    keep = gains.sum(-1) > 0
    if not keep.any():
        return logits.sum() * 0.0
    return group_loss(logits[keep], gains[keep] / gains[keep].sum(-1, keepdim=True))
