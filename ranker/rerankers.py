"""Rerankers by name, as ``rank run --reranker NAME`` takes them.

Each factory imports its model code on use, so listing or validating names never loads torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import RankerError
from .pipeline import Identity, Reranker

MODELS = Path(__file__).resolve().parents[1] / "models"
"""Models shipped with the project (a source checkout): ``models/teacher``, ``models/twinbert``."""


@dataclass(frozen=True)
class RerankerOptions:
    """What a reranker may need: a model folder or name, candidate texts, an embedding store, the twinbert
    query tower's dtype."""

    model: str | None = None
    texts: Mapping[str, str] | None = None
    store: str | None = None
    batch_size: int = 32
    encode_missing: bool = False
    query_dtype: str = "float32"


def _texts(options: RerankerOptions, name: str) -> Mapping[str, str]:
    if options.texts is None:
        raise RankerError(f"reranker {name!r} needs passage text: give --collection FILE (or --index DIR)")
    return options.texts


def _shipped(name: str) -> str:
    path = MODELS / name
    if not path.is_dir():
        raise RankerError(f"no shipped model at {path}: give --model DIR")
    return str(path)


def _teacher(options: RerankerOptions) -> Reranker:
    from .teacher import CrossEncoderReranker

    return CrossEncoderReranker(_texts(options, "teacher"), options.model or _shipped("teacher"), options.batch_size)


def _biencoder(options: RerankerOptions) -> Reranker:
    from .biencoder import BiEncoder, BiEncoderReranker

    return BiEncoderReranker(_texts(options, "biencoder"), BiEncoder(options.model, batch_size=options.batch_size))


def _twinbert(options: RerankerOptions) -> Reranker:
    from .twinbert import TwinBertReranker

    if options.store is None:
        raise RankerError("reranker 'twinbert' needs an embedding store: give --store DIR (built by 'rank encode')")
    return TwinBertReranker(options.model or _shipped("twinbert"), options.store, options.texts,
                            options.encode_missing, options.batch_size, options.query_dtype)


def _ensemble(options: RerankerOptions) -> Reranker:
    import dataclasses

    from .fusion import load_ensemble

    if options.model is None:
        raise RankerError("reranker 'ensemble' needs --model FILE.json (components and weights; see ranker.fusion)")
    return load_ensemble(options.model, lambda name, model: make_reranker(
        name, dataclasses.replace(options, model=model)))


RERANKERS: dict[str, Callable[[RerankerOptions], Reranker]] = {
    "identity": lambda options: Identity(),
    "teacher": _teacher,
    "biencoder": _biencoder,
    "twinbert": _twinbert,
    "ensemble": _ensemble,
}


def make_reranker(name: str, options: RerankerOptions = RerankerOptions()) -> Reranker:
    """The reranker registered as ``name``; an unknown name is an error listing the known ones."""
    try:
        factory = RERANKERS[name]
    except KeyError:
        raise RankerError(f"unknown reranker {name!r}; available: {', '.join(sorted(RERANKERS))}") from None
    return factory(options)
