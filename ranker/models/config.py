"""Model architectures as plain dataclasses, apart from the model code (no torch needed to read or check one).

A saved model folder records its configuration in ``ranker.json``; the defaults here are the shipped recipe
(``scripts/teacher.sh``, ``scripts/student.sh``), so ``CrossEncoderConfig()`` and ``TwinBertConfig()`` are the
architectures of ``models/teacher`` and ``models/twinbert``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ranker.errors import RankerError

HEADS = ("span-cos", "cls")
QUERY_BACKENDS: tuple[str, ...] = ("torch", "torch-bf16", "onnx", "onnx-int8")
"""What can run TwinBERT's query tower (:mod:`ranker.models.query_encoders`)."""
DEFAULT_QUERY_BACKEND = "onnx-int8"
"""The fastest backend that keeps quality: within 0.002 nDCG@10 of float32 on DL19 and SciFact
(docs/experiments.md "Query encoding", measured by ``scripts/backends.sh``)."""
LAYOUTS = ("joint", "gated")


@dataclass(frozen=True)
class CrossEncoderConfig:
    """Architecture of a cross-encoder.

    Attributes:
        head: ``span-cos`` or ``cls``.
        layout: ``joint`` or ``gated`` (``gated`` needs ``span-cos``).
        max_length: Tokens per pair, query and passage together.
        query_max_length: Query tokens kept in the ``gated`` layout (the passage gets the rest).
        segment_bias: Initial cross-segment attention bias (``gated``).
        scale: Initial scale of the ``span-cos`` cosine.
    """

    head: str = "span-cos"
    layout: str = "joint"
    max_length: int = 160
    query_max_length: int = 32
    segment_bias: float = -4.0
    scale: float = 20.0

    def __post_init__(self) -> None:
        if self.head not in HEADS or self.layout not in LAYOUTS:
            raise RankerError(f"head must be one of {HEADS} and layout one of {LAYOUTS}, got {self.head!r}, "
                              f"{self.layout!r}")
        if self.head == "cls" and self.layout != "joint":
            raise RankerError("the 'cls' head reads the joint layout only")



@dataclass(frozen=True)
class TwinBertConfig:
    """Architecture of a TwinBERT model.

    Attributes:
        encoder: HF checkpoint both towers start from; ``None``: the bundled all-MiniLM-L6-v2.
        num_layers: Transformer layers kept (the first ``num_layers`` of the checkpoint).
        shared_encoder: One tower (encoder, pooling, projection) for both sides, or two copies.
        pooling: ``weighted`` (learned softmax weights over the last layer's tokens) or ``cls``.
        proj_dim: Size of the ``tanh(Linear)`` down-projection after pooling; ``None``: no projection.
        crossing: ``res`` (max, residual block, logistic output) or ``cos`` (scaled cosine).
        res_width: Hidden width of the residual block (W1's output size).
        cos_scale: Starting ``w`` of the ``cos`` crossing (learned afterwards). Cosines of one query's
            candidates spread over ~0.1, teacher scores over several units: at ``w = 1`` distillation has to
            stretch the cosines themselves and disturbs the pretrained geometry (measured: docs/student-experiments.md).
        query_max_length: Tokens kept per query.
        doc_max_length: Tokens kept per passage.
        doc_encoder: An asymmetric TwinBERT: the passage side is this sentence-transformers bi-encoder (a name such
            as ``mpnet``, or a folder; mean pooling, unit vectors, :mod:`ranker.models.biencoder`), frozen and read
            from its embedding store, and only the query tower (``encoder``, ``num_layers``, pooling and, when
            the sizes differ, a projection ``proj_dim`` to the bi-encoder's size) is trained. The folder then holds
            no document tower.
    """

    encoder: str | None = None
    num_layers: int = 6
    shared_encoder: bool = True
    pooling: Literal["weighted", "cls"] = "weighted"
    proj_dim: int | None = None
    crossing: Literal["res", "cos"] = "cos"
    res_width: int = 64
    cos_scale: float = 10.0
    query_max_length: int = 32
    doc_max_length: int = 128
    doc_encoder: str | None = None

    def __post_init__(self) -> None:
        if self.doc_encoder and self.shared_encoder:
            raise RankerError("an asymmetric TwinBERT (doc_encoder) needs shared_encoder=False")
        if self.pooling not in ("weighted", "cls") or self.crossing not in ("res", "cos"):
            raise RankerError(f"pooling must be 'weighted' or 'cls' and crossing 'res' or 'cos', got "
                              f"{self.pooling!r}, {self.crossing!r}")
        if self.num_layers < 1 or (self.proj_dim is not None and self.proj_dim < 1) or self.res_width < 1:
            raise RankerError("num_layers, proj_dim and res_width must be positive")
