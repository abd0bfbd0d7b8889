"""The TwinBERT reranker: a :class:`ranker.models.student.Student` (model, store, query encoder) reranking the
candidates it is given, passage vectors read from the store (or encoded on the fly, when allowed)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ranker.errors import RankerError
from ranker.models.config import DEFAULT_QUERY_BACKEND
from ranker.models.query_encoders import QueryEncoder
from ranker.models.student import Student, cross_candidates
from ranker.models.twinbert import TwinBert
from ranker.pipeline import Reranker
from ranker.store.embeddings import EmbeddingStore
from ranker.types import Query, Ranking


class TwinBertReranker(Reranker):
    """Rerank candidates by TwinBERT logit, with passage vectors from an :class:`EmbeddingStore`.

    Per call, the queries are encoded in batches, every candidate's vector is looked up (dequantized), and
    each query is crossed with its candidates. ``timing`` accumulates seconds over calls: ``query_encoding``,
    ``lookup``, ``doc_encoding`` (candidates encoded on the fly) and ``crossing``.

    Args:
        model: A :class:`Student` already open (then ``store`` is not given), a :class:`TwinBert` or a model folder.
        store: An :class:`EmbeddingStore` or its folder; it must come from this model (same fingerprint).
        texts: ``docno -> passage text``, for ``encode_missing``.
        encode_missing: Encode candidates the store lacks from ``texts`` (quantized like the store's vectors)
            instead of raising.
        batch_size: Texts per forward pass.
        query_backend: What runs the query tower (:mod:`ranker.models.query_encoders`): ``torch`` (the float32
            reference), ``torch-bf16``, ``onnx`` or ``onnx-int8`` (the default). Crossing stays float32.

    Raises:
        StoreMismatchError: The store was built by another model.
    """

    name = "twinbert"

    def __init__(self, model: Student | TwinBert | str | Path, store: EmbeddingStore | str | Path | None = None,
                 texts: Mapping[str, str] | None = None, encode_missing: bool = False, batch_size: int = 64,
                 query_backend: str = DEFAULT_QUERY_BACKEND):
        if isinstance(model, Student) != (store is None):
            raise RankerError("TwinBertReranker takes an open Student, or a model and its store")
        self.student = model if isinstance(model, Student) else Student.open(model, store, query_backend, batch_size)
        if encode_missing and texts is None:
            raise RankerError("encode_missing needs the passage texts")
        self.texts, self.encode_missing, self.batch_size = texts, encode_missing, batch_size
        self.timing = {"query_encoding": 0.0, "lookup": 0.0, "doc_encoding": 0.0, "crossing": 0.0}
        self.queries_truncated = 0
        """Queries this stage cut to the query cap (a dense stage sharing the student counts its own)."""

    @property
    def model(self) -> TwinBert:
        return self.student.model

    @property
    def store(self) -> EmbeddingStore:
        return self.student.store

    @property
    def query_encoder(self) -> QueryEncoder:
        return self.student.query_encoder

    @contextlib.contextmanager
    def _timed(self, key: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.timing[key] += time.perf_counter() - started

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        qids = [qid for qid in candidates if qid in queries]
        with self._timed("query_encoding"):
            q_vecs, cut = self.student.counted_query_vectors([queries[qid].text for qid in qids])
        self.queries_truncated += cut
        docnos = list(dict.fromkeys(d.docno for qid in qids for d in candidates[qid]))
        d_vecs, row_of, windows = self._doc_vectors(docnos)
        with self._timed("crossing"):
            return cross_candidates(self.model, qids, candidates, q_vecs, d_vecs, row_of, windows)

    def _doc_vectors(self, docnos: list[str]) -> tuple[np.ndarray, dict[str, int], dict[str, int] | None]:
        """Float32 rows of the (distinct) docnos — every window of a document the store holds as windows — from
        the store, or encoded when missing and allowed (:meth:`Student.passage_vectors`); the first row of each
        docno among them, and its number of windows (``None``: one row each)."""
        with self._timed("lookup"):
            rows = self.store.rows_of(docnos)
        missing = [d for d, row in zip(docnos, rows) if row is None]
        if missing and not self.encode_missing:
            raise RankerError(f"{len(missing)} candidate(s) not in the embedding store {self.store.path}: "
                              f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} "
                              "(rebuild the store, or encode them on the fly: --encode-missing with the "
                              "passage text)")
        encoded = None
        if missing:
            with self._timed("doc_encoding"):
                encoded = self.student.encode_passages(self._texts(missing), self.batch_size)
        with self._timed("lookup"):
            vectors, starts = self.student.passage_vectors(rows, encoded)
        counts = np.diff(np.append(starts, len(vectors))).tolist()
        windows = {d: n for d, n in zip(docnos, counts) if n > 1} or None
        return vectors, dict(zip(docnos, starts.tolist())), windows

    def _texts(self, docnos: list[str]) -> list[str]:
        lacking = [d for d in docnos if d not in self.texts]
        if lacking:
            raise RankerError(f"no text for candidate(s) missing from the store: {', '.join(lacking[:5])}")
        return [self.texts[d] for d in docnos]

    def config(self) -> dict:
        return {"stage": self.name, **dataclasses.asdict(self.model.config), "store": str(self.store.path),
                "store_dtype": self.store.dtype, "fingerprint": self.store.fingerprint,
                "encode_missing": self.encode_missing, "query_backend": self.query_encoder.backend,
                "queries_truncated": self.queries_truncated}
