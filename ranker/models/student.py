"""The student loaded to score: a TwinBERT folder, the embedding store of its passage vectors and its query encoder,
opened once, and the three steps every caller scores through.

:class:`Student` is what ``rank run``/``rank bench`` (through :class:`ranker.rerank.twinbert.TwinBertReranker`),
the dense first stage (:mod:`ranker.first_stage.dense`) and ``rank serve`` (:mod:`ranker.serve.service`) hold:
query vectors on the chosen backend, passage vectors from the store (or encoded now and quantized as the store's
are), and the crossing. One ``--retriever dense --reranker twinbert`` pipeline opens one :class:`Student` for both
stages; training's validation crosses through :func:`cross_candidates` too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ranker.errors import RankerError
from ranker.models.config import DEFAULT_QUERY_BACKEND
from ranker.models.loading import student_path
from ranker.models.query_encoders import QueryEncoder, make_query_encoder
from ranker.models.twinbert import TwinBert
from ranker.pipeline import rescored
from ranker.store.embeddings import EmbeddingStore
from ranker.store.windows import expand
from ranker.types import Ranking


def cross_candidates(model: TwinBert, qids: Sequence[str], candidates: Ranking, queries: np.ndarray,
                     passages: np.ndarray, row_of: Mapping[str, int],
                     windows: Mapping[str, int] | None = None) -> Ranking:
    """Every candidate of each query rescored by the crossing: query ``qids[i]``'s vector is row ``i`` of
    ``queries``, a candidate's is row ``row_of[docno]`` of ``passages`` (float32) — with ``windows``, the
    ``windows[docno]`` rows from there (a document stored as its windows: every window is crossed and the
    document scores its best window, MaxP). Unsorted, as rerankers return."""
    docs = [d for qid in qids for d in candidates[qid]]
    query_rows = np.fromiter((i for i, qid in enumerate(qids) for _ in candidates[qid]), dtype=np.int64)
    passage_rows = np.fromiter((row_of[d.docno] for d in docs), dtype=np.int64)
    counts = None if windows is None else np.fromiter((windows.get(d.docno, 1) for d in docs), dtype=np.int64)
    if counts is None or np.all(counts == 1):
        return rescored(docs, cross(model, queries[query_rows], passages[passage_rows]).tolist())
    rows, starts = expand(passage_rows, counts)
    logits = cross(model, queries[np.repeat(query_rows, counts)], passages[rows])
    return rescored(docs, np.maximum.reduceat(logits, starts).tolist())


def cross(model: TwinBert, queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
    """Logits of row ``i`` of ``queries`` against row ``i`` of ``passages`` (one query vector: against each)."""
    with torch.inference_mode():
        return model.cross(torch.from_numpy(queries).to(model.device),
                           torch.from_numpy(passages).to(model.device)).cpu().numpy()


@dataclass
class Student:
    """A TwinBERT model in eval mode, the store it built, and its query encoder."""

    model: TwinBert
    store: EmbeddingStore
    query_encoder: QueryEncoder

    @classmethod
    def open(cls, model: TwinBert | str | Path | None, store: EmbeddingStore | str | Path,
             query_backend: str = DEFAULT_QUERY_BACKEND, batch_size: int = 64,
             query_max_length: int | None = None, device: str | None = None) -> Student:
        """Load the model (a folder, one already loaded, or ``None``: the shipped student) and its store, and
        build the query encoder.

        Args:
            query_max_length: Query tokens kept (``None``: the model's own cap).

        Raises:
            StoreMismatchError: The store was built by another model.
            RankerError: ``query_max_length`` is more than the query tower's positions.
        """
        student = (model if isinstance(model, TwinBert) else TwinBert.load(student_path(model), device=device)).eval()
        if query_max_length:
            if query_max_length > student.query_positions:
                raise RankerError(f"--query-max-length {query_max_length} is more than the query tower's "
                                  f"{student.query_positions} positions")
            student.config = dataclasses.replace(student.config, query_max_length=query_max_length)
        store = store if isinstance(store, EmbeddingStore) else EmbeddingStore.load(store)
        store.check_model(student)
        return cls(student, store, make_query_encoder(student, query_backend, batch_size))

    @property
    def fingerprint(self) -> str:
        """The document side's fingerprint (the store's, checked equal to the model's when opened)."""
        return self.store.fingerprint

    def query_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Query vectors, float32, one row per text."""
        return self.query_encoder.encode(list(texts))

    def counted_query_vectors(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Query vectors and how many of the texts were longer than the query cap and cut to it."""
        before = self.query_encoder.truncated
        vectors = self.query_vectors(texts)
        return vectors, self.query_encoder.truncated - before

    def encode_passages(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Vectors of passages the store lacks, encoded now and quantized as the store's vectors are."""
        return self.store.requantize(self.model.encode_docs(list(texts), batch_size).numpy())

    def passage_vectors(self, rows: Sequence[int | None], encoded: np.ndarray | None = None,
                        store: EmbeddingStore | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Float32 vectors of documents, in order: every window of the document whose first window is at row
        ``rows[i]`` of ``store`` (default: the student's), or, where ``rows[i]`` is ``None``, the next row of
        ``encoded`` (:meth:`encode_passages`). Returns the vectors and each document's first row among them (its
        windows follow it). The one path from a store to vectors: the reranker and the server both take it."""
        store = store or self.store
        known = [i for i, row in enumerate(rows) if row is not None]
        unseen = [i for i, row in enumerate(rows) if row is None]
        counts = np.ones(len(rows), dtype=np.int64)
        counts[known] = store.window_counts([rows[i] for i in known])
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        vectors = np.zeros((int(counts.sum()), store.dim), dtype=np.float32)
        if known:
            flat, _ = store.window_rows([rows[i] for i in known])
            at = np.concatenate([np.arange(starts[i], starts[i] + counts[i]) for i in known])
            vectors[at] = store.lookup_rows(flat)
        if unseen:
            vectors[starts[unseen]] = encoded
        return vectors, starts

    def cross(self, queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
        """Logits of row ``i`` of ``queries`` against row ``i`` of ``passages`` (one query vector: against each)."""
        return cross(self.model, queries, passages)
