"""The student loaded to score: a TwinBERT folder, the embedding store of its passage vectors and its query encoder,
opened once, and the three steps every caller scores through.

:class:`Student` is what ``rank run``/``rank bench`` (through :class:`TwinBertReranker`), the dense first stage
(:mod:`ranker.rerank.dense`) and ``rank serve`` (:mod:`ranker.serve.service`) hold: query vectors on the chosen
backend, passage vectors from the store (or encoded now and quantized as the store's are), and the crossing.
One ``--retriever dense --reranker twinbert`` pipeline opens one :class:`Student` for both stages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ranker.errors import RankerError
from ranker.pipeline import Reranker, rescored
from ranker.rerank.config import DEFAULT_QUERY_BACKEND
from ranker.rerank.query_encoders import QueryEncoder, make_query_encoder
from ranker.rerank.twinbert import TwinBert
from ranker.store.embeddings import EmbeddingStore
from ranker.types import Query, Ranking


def cross_candidates(model: TwinBert, qids: Sequence[str], candidates: Ranking, queries: np.ndarray,
                     passages: np.ndarray, row_of: Mapping[str, int]) -> Ranking:
    """Every candidate of each query rescored by the crossing: query ``qids[i]``'s vector is row ``i`` of
    ``queries``, a candidate's is row ``row_of[docno]`` of ``passages`` (float32). Unsorted, as rerankers return."""
    docs = [d for qid in qids for d in candidates[qid]]
    query_rows = np.fromiter((i for i, qid in enumerate(qids) for _ in candidates[qid]), dtype=np.int64)
    passage_rows = np.fromiter((row_of[d.docno] for d in docs), dtype=np.int64)
    return rescored(docs, cross(model, queries[query_rows], passages[passage_rows]).tolist())


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
    def open(cls, model: TwinBert | str | Path, store: EmbeddingStore | str | Path,
             query_backend: str = DEFAULT_QUERY_BACKEND, batch_size: int = 64,
             query_max_length: int | None = None, device: str | None = None) -> Student:
        """Load the model (a folder, or one already loaded) and its store, and build the query encoder.

        Args:
            query_max_length: Query tokens kept (``None``: the model's own cap).

        Raises:
            StoreMismatchError: The store was built by another model.
            RankerError: ``query_max_length`` is more than the query tower's positions.
        """
        student = (model if isinstance(model, TwinBert) else TwinBert.load(model, device=device)).eval()
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

    def encode_passages(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Vectors of passages the store lacks, encoded now and quantized as the store's vectors are."""
        return self.store.requantize(self.model.encode_docs(list(texts), batch_size).numpy())

    def cross(self, queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
        """Logits of row ``i`` of ``queries`` against row ``i`` of ``passages`` (one query vector: against each)."""
        return cross(self.model, queries, passages)


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
        query_backend: What runs the query tower (:mod:`ranker.rerank.query_encoders`): ``torch`` (the float32
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
            q_vecs = self.student.query_vectors([queries[qid].text for qid in qids])
        docnos = list(dict.fromkeys(d.docno for qid in qids for d in candidates[qid]))
        d_vecs = self._doc_vectors(docnos)
        with self._timed("crossing"):
            return cross_candidates(self.model, qids, candidates, q_vecs, d_vecs,
                                    {d: i for i, d in enumerate(docnos)})

    def _doc_vectors(self, docnos: list[str]) -> np.ndarray:
        """One float32 row per (distinct) docno: from the store, or encoded when missing and allowed."""
        with self._timed("lookup"):
            rows = self.store.rows_of(docnos)
            known = [d for d, row in zip(docnos, rows) if row is not None]
            missing = [d for d, row in zip(docnos, rows) if row is None]
            if missing and not self.encode_missing:
                raise RankerError(f"{len(missing)} candidate(s) not in the embedding store {self.store.path}: "
                                  f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} "
                                  "(rebuild the store, or encode them on the fly: --encode-missing with the "
                                  "passage text)")
            found = self.store.lookup_rows([row for row in rows if row is not None])
        if not missing:
            return found
        with self._timed("doc_encoding"):
            found = np.concatenate([found, self.student.encode_passages(self._texts(missing), self.batch_size)])
        row = {d: i for i, d in enumerate(known + missing)}
        return found[[row[d] for d in docnos]]

    def _texts(self, docnos: list[str]) -> list[str]:
        lacking = [d for d in docnos if d not in self.texts]
        if lacking:
            raise RankerError(f"no text for candidate(s) missing from the store: {', '.join(lacking[:5])}")
        return [self.texts[d] for d in docnos]

    def config(self) -> dict:
        return {"stage": self.name, **dataclasses.asdict(self.model.config), "store": str(self.store.path),
                "store_dtype": self.store.dtype, "fingerprint": self.store.fingerprint,
                "encode_missing": self.encode_missing, "query_backend": self.query_encoder.backend,
                "queries_truncated": self.query_encoder.truncated}
