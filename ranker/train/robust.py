"""A student that does not forget its start: weights interpolated with the zero-shot model it was distilled from.

WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): ``θ = α·θ_distilled + (1−α)·θ_start``,
tensor by tensor, with ``α`` picked on validation sets from more than one domain. For a TwinBERT student the start
is the same architecture freshly built from its checkpoint (``TwinBertConfig.encoder``, default the bundled
all-MiniLM-L6-v2): its weighted pooling starts as exact mean pooling and its ``cos`` crossing as the plain cosine,
so ``α = 0`` is the zero-shot bi-encoder and ``α = 1`` the distilled student.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch

from ranker.errors import RankerError
from ranker.io.atomic import write_json
from ranker.models.twinbert import TwinBert


def zero_shot_start(student: TwinBert) -> TwinBert:
    """``student``'s architecture built afresh from its checkpoint: the model distillation started from."""
    if student.config.doc_encoder:
        raise RankerError("an asymmetric student's passage side is frozen: interpolate symmetric students only")
    return TwinBert(student.config, device="cpu")


def interpolate(student: TwinBert, alpha: float, start: TwinBert | None = None) -> TwinBert:
    """A new model with ``alpha·student + (1−alpha)·start`` for every tensor (``start``: :func:`zero_shot_start`).

    Raises:
        RankerError: ``alpha`` outside [0, 1], or the two architectures differ.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) \
            or not 0 <= alpha <= 1:
        raise RankerError(f"alpha must lie in [0, 1], got {alpha!r}")
    start = start or zero_shot_start(student)
    if start.config != student.config:
        raise RankerError("the start and the student differ in architecture: they cannot be interpolated")
    tuned, base = student.state_dict(), start.state_dict()
    if tuned.keys() != base.keys():
        raise RankerError(f"the start and the student hold different tensors: {sorted(tuned.keys() ^ base.keys())}")
    mixed = TwinBert(student.config, device="cpu")
    with torch.no_grad():  # the ends copied as they are: -0.0 + 0.0 would turn a signed zero (and the fingerprint)
        mixed.load_state_dict({name: base[name] if alpha == 0 else tuned[name] if alpha == 1 else
                               (alpha * tuned[name].float() + (1 - alpha) * base[name].float()).to(tuned[name].dtype)
                               for name in tuned})
    return mixed.eval()


def save_interpolated(model: str | Path, alpha: float, output: str | Path, query_max_length: int | None = None,
                      doc_max_length: int | None = None) -> Path:
    """Load the student folder ``model``, interpolate it with its zero-shot start (:func:`interpolate`) and save
    the result as a model folder at ``output`` with ``training.json`` recording the recipe; ``query_max_length``
    and ``doc_max_length`` set the saved model's query cap and passage window (default: the student's)."""
    student = TwinBert.load(model, device="cpu")
    mixed = interpolate(student, alpha)
    positions = mixed.query_positions
    for name, value in (("query_max_length", query_max_length), ("doc_max_length", doc_max_length)):
        if value is not None:
            if not 4 <= value <= positions:
                raise RankerError(f"{name} must lie in [4, {positions}] (the encoder's positions), got {value}")
            mixed.config = dataclasses.replace(mixed.config, **{name: value})
    path = mixed.save(output)
    write_json(Path(path) / "training.json", {
        "recipe": "wise-ft", "alpha": alpha, "distilled": str(model), "query_max_length": mixed.config.query_max_length,
        "doc_max_length": mixed.config.doc_max_length,
        "start": student.config.encoder or "all-MiniLM-L6-v2 (bundled)",
        "rule": "alpha * distilled + (1 - alpha) * start, every tensor (Wortsman et al. 2022)"})
    return Path(path)
