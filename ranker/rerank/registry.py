"""Rerankers by name, as ``rank run --reranker NAME`` takes them (the shipped models' folder:
:mod:`ranker.models.loading`).

Each factory imports its model code on use, so listing or validating names never loads torch. A reranker
can also be named by its model alone: :func:`reranker_kind` reads the kind from the artifact's metadata
(:mod:`ranker.io.artifact`), never from its name or file extension.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ranker.errors import RankerError
from ranker.models.config import DEFAULT_QUERY_BACKEND
from ranker.models.kinds import reranker_kind
from ranker.models.loading import DEFAULT_MODELS, resolve_model, shipped_model
from ranker.pipeline import Identity, Reranker

if TYPE_CHECKING:
    from ranker.models.student import Student

@dataclass(frozen=True)
class RerankerConfig:
    """What a reranker may need.

    Attributes:
        model: Model folder, hub name or ensemble file; ``None``: the shipped one for the kind.
        texts: ``docno -> passage text`` of the candidates (every reranker but ``twinbert`` and ``identity``).
        store: Embedding store folder (``twinbert``).
        batch_size: Texts or pairs per forward pass.
        encode_missing: ``twinbert``: encode candidates the store lacks from ``texts``.
        query_backend: What runs ``twinbert``'s query tower (:data:`ranker.models.config.QUERY_BACKENDS`).
        query_max_length: ``twinbert``: query tokens kept (``None``: the model's own cap).
        biencoder_backend: What runs ``biencoder``'s encoder (:data:`ranker.models.biencoder.BACKENDS`).
        student: ``twinbert``: a :class:`ranker.models.student.Student` already open for this model and store
            (the dense first stage's), used instead of loading them again.
    """

    model: str | None = None
    texts: Mapping[str, str] | None = None
    store: str | None = None
    batch_size: int = 32
    encode_missing: bool = False
    query_backend: str = DEFAULT_QUERY_BACKEND
    query_max_length: int | None = None
    biencoder_backend: str = "torch"
    student: Student | None = None


def _texts(config: RerankerConfig, name: str) -> Mapping[str, str]:
    if config.texts is None:
        raise RankerError(f"reranker {name!r} needs passage text: give --collection FILE (or --index DIR)")
    return config.texts


def _cross_encoder(config: RerankerConfig) -> Reranker:
    from ranker.rerank.cross_encoder import CrossEncoderReranker

    model = config.model or shipped_model(DEFAULT_MODELS["cross-encoder"])
    return CrossEncoderReranker(_texts(config, "cross-encoder"), model, config.batch_size)


def _biencoder(config: RerankerConfig) -> Reranker:
    from ranker.models.biencoder import BiEncoder
    from ranker.rerank.biencoder import BiEncoderReranker

    texts = config.texts if config.store is not None else _texts(config, "biencoder")
    return BiEncoderReranker(texts, BiEncoder(config.model, batch_size=config.batch_size,
                                              backend=config.biencoder_backend), config.store)


def _twinbert(config: RerankerConfig) -> Reranker:
    from ranker.models.student import Student
    from ranker.rerank.twinbert import TwinBertReranker

    student = config.student
    if student is None:
        if config.store is None:
            raise RankerError("reranker 'twinbert' needs an embedding store: give --store DIR (built by 'rank "
                              "encode')")
        student = Student.open(config.model, config.store, config.query_backend,
                               config.batch_size, config.query_max_length)
    return TwinBertReranker(student, texts=config.texts, encode_missing=config.encode_missing,
                            batch_size=config.batch_size)


def _ensemble(config: RerankerConfig) -> Reranker:
    from ranker.rerank.ensemble import load_ensemble

    if config.model is None:
        raise RankerError("reranker 'ensemble' needs --model FILE.json (components and weights; "
                          "see ranker.rerank.ensemble)")
    return load_ensemble(config.model, lambda name, model: make_reranker(
        name, dataclasses.replace(config, model=model)))


def _sentence_transformers(config: RerankerConfig) -> Reranker:
    from ranker.rerank.peers import sentence_transformer

    return sentence_transformer(config.model, config.store)


RERANKERS: dict[str, Callable[[RerankerConfig], Reranker]] = {
    "identity": lambda config: Identity(),
    "cross-encoder": _cross_encoder,
    "biencoder": _biencoder,
    "twinbert": _twinbert,
    "ensemble": _ensemble,
    "sentence-transformers": _sentence_transformers,
}
"""Reranker factories by registry name."""

ALIASES = {"teacher": "cross-encoder"}
"""Other names a reranker is known by (``teacher`` is the cross-encoder's role in the pipeline)."""

def reranker_names() -> list[str]:
    """Every name :func:`make_reranker` takes, aliases after the registry's own."""
    return [*RERANKERS, *ALIASES]


def make_reranker(name: str | None, config: RerankerConfig = RerankerConfig()) -> Reranker:
    """The reranker registered as ``name`` (or an alias); ``None``: the kind ``config.model``'s metadata names.

    Raises:
        RankerError: An unknown name (the known ones are listed), or neither a name nor a model.
    """
    if config.model is not None:
        config = dataclasses.replace(config, model=str(resolve_model(config.model)))
    if name is None:
        if config.model is None:
            raise RankerError("name a reranker (--reranker) or give its model (--model)")
        name = reranker_kind(config.model)
    key = ALIASES.get(name, name)
    if key not in RERANKERS:
        raise RankerError(f"unknown reranker {name!r}; available: {', '.join(sorted(reranker_names()))}")
    return RERANKERS[key](config)
