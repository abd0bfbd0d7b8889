"""The bi-encoder as a reranker: query and passage vectors' cosine, passages encoded per query or read from a
store (:func:`store_scores`, which the sentence-transformers peers use too)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ranker.errors import RankerError
from ranker.models.biencoder import BiEncoder
from ranker.pipeline import Reranker, pending, rescored
from ranker.store.embeddings import EmbeddingStore
from ranker.types import Query, Ranking, ScoredDoc


class BiEncoderReranker(Reranker):
    """Rerank candidates by bi-encoder cosine.

    Args:
        texts: ``docno -> passage text`` for every candidate (e.g. a :class:`ranker.io.texts.TextSource`), encoded
            per query; unused with a ``store``.
        encoder: The bi-encoder; default: the bundled all-MiniLM-L6-v2.
        store: Passage vectors this encoder wrote (``rank encode --encoder biencoder``): only queries are encoded.

    Raises:
        StoreMismatchError: The store was built by another model.
    """

    name = "biencoder"

    def __init__(self, texts: Mapping[str, str] | None, encoder: BiEncoder | None = None,
                 store: str | Path | None = None):
        self.texts = texts
        self.encoder = encoder or BiEncoder()
        self.store = EmbeddingStore.load(store, self.encoder) if store is not None else None

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        docs = pending(queries, candidates)
        if self.store is None:
            scores = self.encoder.score_pairs([(queries[d.qid].text, self.texts[d.docno]) for d in docs])
            return rescored(docs, scores)
        return store_scores(docs, queries, self.encoder.encode, self.store)

    def config(self) -> dict:
        return {"stage": self.name, **self.encoder.config(),
                **({"store": str(self.store.path), "store_dtype": self.store.dtype} if self.store else {})}


def store_scores(docs: Sequence[ScoredDoc], queries: Mapping[str, Query], encode: Callable[[list[str]], np.ndarray],
                 store: EmbeddingStore, normalize_passages: bool = False) -> Ranking:
    """``docs`` rescored by the dot product of their query's vector (``encode``, each distinct query once) and
    their stored vector (divided by its norm with ``normalize_passages``: a store of unnormalised vectors); a
    document stored as windows scores its best window (MaxP).

    Raises:
        RankerError: A docno is not in the store (the first few are named).
    """
    qids = list(dict.fromkeys(d.qid for d in docs))
    q_vecs = encode([queries[qid].text for qid in qids])
    row = {qid: i for i, qid in enumerate(qids)}
    firsts = store.rows_of([d.docno for d in docs])
    missing = [d.docno for d, r in zip(docs, firsts) if r is None]
    if missing:
        raise RankerError(f"{len(missing)} docno(s) not in the embedding store {store.path}: {', '.join(missing[:5])}")
    rows, starts = store.window_rows(firsts)
    d_vecs = store.lookup_rows(rows)
    counts = np.diff(np.append(starts, len(rows)))
    scores = (q_vecs[np.repeat([row[d.qid] for d in docs], counts)] * d_vecs).sum(1)
    if normalize_passages:
        scores = scores / np.linalg.norm(d_vecs, axis=1).clip(min=1e-12)
    return rescored(docs, np.maximum.reduceat(scores, starts) if len(rows) != len(docs) else scores)
