"""Which reranker serves a model artifact, read from its metadata (:mod:`ranker.io.artifact`), never from its
name or file extension. Below the registry, so the rerankers that take any model (the sentence-transformers
peer) can ask without importing it."""

from __future__ import annotations

from pathlib import Path

from ranker.errors import MissingInputError, RankerError
from ranker.io.artifact import ARTIFACTS, artifact_type

KINDS = {type: reranker for type, (_, reranker) in ARTIFACTS.items() if reranker is not None}
"""Artifact type -> the reranker that serves it (from :data:`ranker.io.artifact.ARTIFACTS`)."""


def reranker_kind(model: str | Path, default: str | None = None) -> str:
    """The reranker for a model artifact, from its metadata; ``default`` for a model that is no ranker artifact
    (a Hugging Face name or folder), if given.

    Raises:
        RankerError: The artifact is no rerankable model (a store, an index…), or no artifact and no ``default``.
    """
    try:
        found = artifact_type(model)
    except MissingInputError:
        if default is None:
            raise
        return default
    if found not in KINDS:
        raise RankerError(f"{model} is a {found} artifact, not a model a reranker serves "
                          f"({', '.join(KINDS)})")
    return KINDS[found]


def is_student(model: str | Path | None) -> bool:
    """Whether ``model`` names a TwinBERT student (``None``: the shipped one) rather than a bi-encoder (a
    sentence-transformers name or folder): how the dense retriever and the peer read a store's model."""
    return not model or reranker_kind(model, default="biencoder") == "twinbert"
