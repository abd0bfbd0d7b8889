"""What a user would run instead of this project's student: a sentence-transformers model encoding the query, and
a dot product against passage vectors cached in an embedding store.

``SentenceTransformerReranker`` is that, with the ``sentence-transformers`` library's own ``encode`` (the code a
user copies from its documentation): the same weights as a model here (a TwinBERT folder's document encoder, the
bundled MiniLM, mpnet) and the store that model wrote, so ``rank bench`` times the same work done the usual way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ranker.errors import RankerError
from ranker.models.hf import resolve_checkpoint
from ranker.models.kinds import is_student
from ranker.pipeline import Reranker, pending
from ranker.store.embeddings import EmbeddingStore
from ranker.types import Query, Ranking


class SentenceTransformerReranker(Reranker):
    """Query by ``SentenceTransformer.encode`` (mean pooling, unit length), passages from a store.

    Args:
        model: A sentence-transformers folder or name (``minilm``, ``mpnet``), or a TwinBERT folder (its
            document encoder is loaded; ranking by cosine is what its ``cos`` crossing does, up to pooling).
        store: The store that model's encoder wrote (``rank encode``).

    Raises:
        StoreMismatchError: The store was built by another model.
    """

    name = "sentence-transformers"

    def __init__(self, model: str | Path | None, store: str | Path):
        from sentence_transformers import SentenceTransformer

        path = resolve_checkpoint(model)
        twinbert = is_student(path)
        if twinbert:
            from ranker.models.twinbert import TwinBert

            owner = TwinBert.load(path, device="cpu")
            encoder_path = owner.path / "doc_encoder"
        else:
            from ranker.models.biencoder import BiEncoder

            owner, encoder_path = BiEncoder(path, device="cpu"), path
        self.store = EmbeddingStore.load(store, owner)
        self.model = SentenceTransformer(str(encoder_path), device="cpu")
        self.model.max_seq_length = owner.config.query_max_length if twinbert else owner.max_length
        self.model_path = str(path)
        del owner

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        from ranker.rerank.biencoder import store_scores

        def encode(texts: list[str]) -> np.ndarray:
            return self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)

        return store_scores(pending(queries, candidates), queries, encode, self.store, normalize_passages=True)

    def config(self) -> dict:
        return {"stage": self.name, "model": self.model_path, "store": str(self.store.path),
                "max_length": self.model.max_seq_length}


def sentence_transformer(model: str | None, store: str | None) -> SentenceTransformerReranker:
    """The registry's factory: a store is required."""
    if store is None:
        raise RankerError("reranker 'sentence-transformers' needs an embedding store of its model: give --store DIR")
    return SentenceTransformerReranker(model, store)
