"""TwinBERT's retrieval variant as a first stage: nearest neighbours of the query vector among a store's vectors.

The student's ``cos`` crossing, ``w cos(q, d) + b``, ranks a query's passages by cosine, so its store is also a
retrieval index: the whole collection ranked by cosine is the student's ranking of the whole collection (the
paper's retrieval TwinBERT). The same holds for a bi-encoder store (unit vectors, mean pooling). Two searches:

* ``exact``: every vector, in blocks read from the memory-mapped store (memory stays bounded by the block);
* ``hnsw``: FAISS's HNSW graph over the normalised vectors (approximate; ``ef_search`` trades recall for time).

:class:`HybridRetriever` fuses BM25 and dense by the one rule of :func:`ranker.fusion.interpolate` (the fused
reranker's too): the union of both top-``k`` lists, each list's scores z-normalised per query, a document one list
lacks taking that list's lowest z-score, then ``weight * dense + (1 - weight) * bm25``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ranker.errors import RankerError
from ranker.fusion import interpolate
from ranker.pipeline import Stage
from ranker.store.embeddings import EmbeddingStore
from ranker.types import Query, Ranking, ScoredDoc, sort_ranking

SEARCHES = ("exact", "hnsw")
BLOCK_ROWS = 65_536


class DenseRetriever(Stage):
    """Top-``k`` passages of a store by cosine with the query vector.

    Args:
        store: The store folder (built by ``rank encode``, twinbert or biencoder).
        model: The model that built it: a TwinBERT folder (default the shipped student; its crossing must be
            ``cos``) or, for a bi-encoder store, ``minilm``, ``mpnet`` or a folder.
        search: ``exact`` or ``hnsw``.
        k: Passages per query.
        query_backend: The student's query tower backend (:mod:`ranker.models.query_encoders`).
        ef_search: HNSW's candidate list size per query.

    Raises:
        StoreMismatchError: The store was built by another model.
        RankerError: A student with the ``res`` crossing (it is no inner product), or an unknown search.
    """

    name = "dense"

    def __init__(self, store: str | Path, model: str | None = None, search: str = "exact", k: int = 1000,
                 query_backend: str | None = None, ef_search: int = 256, hnsw_m: int = 32):
        if search not in SEARCHES:
            raise RankerError(f"dense search must be one of {', '.join(SEARCHES)}, not {search!r}")
        self.search, self.k, self.ef_search, self.hnsw_m = search, k, ef_search, hnsw_m
        self.student = None
        """The :class:`ranker.models.student.Student` searched with, when the store is a student's (a twinbert
        reranker after this stage can score with it)."""
        self.queries_truncated = 0
        """Queries a student's query tower cut to its query cap."""
        self.encode = self._query_encoder(model, store, query_backend)
        if len(self.store) == 0:  # no rows, or every one deleted
            raise RankerError(f"{store}: the embedding store holds no live passages: nothing to retrieve")
        self.hnsw = self._hnsw() if search == "hnsw" else None

    def _query_encoder(self, model: str | None, store: str | Path, query_backend: str | None):
        from ranker.models.kinds import is_student
        from ranker.models.loading import student_path

        if is_student(model):
            from ranker.models.config import DEFAULT_QUERY_BACKEND
            from ranker.models.student import Student
            from ranker.models.twinbert import TwinBert

            loaded = TwinBert.load(student_path(model), device="cpu")
            if loaded.config.crossing != "cos":
                raise RankerError(f"{loaded.path}: dense retrieval needs the cos crossing (an inner product of "
                                  f"normalised vectors), this model's is {loaded.config.crossing!r}")
            self.student = Student.open(loaded, store, query_backend or DEFAULT_QUERY_BACKEND)
            self.store = self.student.store
            self.model_path = str(self.student.model.path)
            return self._counted_query_vectors
        from ranker.models.biencoder import BiEncoder

        encoder = BiEncoder(model, device="cpu", progress=False)
        self.store = EmbeddingStore.load(store, encoder)
        self.model_path = encoder.model_path
        return encoder.encode

    def _counted_query_vectors(self, texts: list[str]) -> np.ndarray:
        vectors, cut = self.student.counted_query_vectors(texts)
        self.queries_truncated += cut
        return vectors

    def _blocks(self):
        rows = self.store.row_count
        for start in range(0, rows, BLOCK_ROWS):
            block = self.store.lookup_rows(range(start, min(start + BLOCK_ROWS, rows)))
            yield start, block / np.linalg.norm(block, axis=1, keepdims=True).clip(min=1e-12)

    def _hnsw(self):
        import faiss

        index = faiss.IndexHNSWFlat(self.store.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        for _, block in self._blocks():
            index.add(block.astype(np.float32))
        index.hnsw.efSearch = max(self.ef_search, self.k)
        return index

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and cosines of the top ``k`` documents per query vector, best first: ``(n, k)`` each (-1 and
        ``-inf`` past the last). A document stored as windows scores its best window (MaxP), whose row is given;
        rows are searched deeper than ``k`` until ``k`` distinct documents are found."""
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
        k = min(k, len(self.store))
        if self.store.windows is None:
            return self._search_rows(vectors, k)
        live, depth = self.store.row_count - len(self.store.deleted), k
        while True:
            rows, scores = self._search_rows(vectors, min(depth, live))
            best, complete = self._best_windows(rows, scores, k)
            if complete or depth >= live:
                return best
            depth *= 2

    def _best_windows(self, rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[tuple, bool]:
        """The first ``k`` distinct documents of each query's rows (best first: each document at its best
        window), and whether every query found ``k``."""
        out_rows, out_scores = np.full((len(rows), k), -1, dtype=np.int64), np.full((len(rows), k), -np.inf)
        complete = True
        for i, (found, score) in enumerate(zip(rows, scores)):
            keep = found >= 0
            found, score = found[keep], score[keep]
            _, first = np.unique(self.store.first_rows(found), return_index=True)
            first = np.sort(first)[:k]
            out_rows[i, :len(first)], out_scores[i, :len(first)] = found[first], score[first]
            complete &= len(first) == k
        return (out_rows, out_scores), complete

    def _search_rows(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and cosines of the top ``k`` rows per (normalised) query vector, best first."""
        deleted = self.store.deleted
        if self.hnsw is not None:
            scores, rows = self.hnsw.search(vectors.astype(np.float32), k + len(deleted))
            if deleted:  # tombstoned rows are still in the graph: skip them
                keep = [[j for j, r in enumerate(row) if r not in deleted][:k] for row in rows]
                rows = np.array([row[idx] for row, idx in zip(rows, keep)])
                scores = np.array([row[idx] for row, idx in zip(scores, keep)])
            return rows, scores
        dead = np.fromiter(deleted, dtype=np.int64)
        best_rows = np.zeros((len(vectors), 0), dtype=np.int64)
        best = np.zeros((len(vectors), 0), dtype=np.float32)
        for start, block in self._blocks():
            rows = np.concatenate([best_rows, np.arange(start, start + len(block))[None].repeat(len(vectors), 0)], 1)
            block_scores = vectors @ block.T
            gone = dead[(dead >= start) & (dead < start + len(block))] - start
            block_scores[:, gone] = -np.inf
            scores = np.concatenate([best, block_scores], 1)
            keep = np.argpartition(-scores, k - 1, axis=1)[:, :k] if scores.shape[1] > k else \
                np.arange(scores.shape[1])[None].repeat(len(vectors), 0)
            best_rows, best = np.take_along_axis(rows, keep, 1), np.take_along_axis(scores, keep, 1)
        order = np.argsort(-best, axis=1, kind="stable")
        return np.take_along_axis(best_rows, order, 1), np.take_along_axis(best, order, 1)

    def transform(self, queries: Mapping[str, Query], candidates: Ranking | None = None) -> Ranking:
        qids = list(queries)
        rows, scores = self.search_vectors(self.encode([queries[q].text for q in qids]), self.k)
        docnos = self.store.docnos
        return {qid: [ScoredDoc(qid, docnos[r], float(s)) for r, s in zip(rows[i], scores[i]) if r >= 0]
                for i, qid in enumerate(qids)}

    def config(self) -> dict:
        return {"stage": self.name, "store": str(self.store.path), "model": self.model_path, "search": self.search,
                "k": self.k, **({"ef_search": self.ef_search, "hnsw_m": self.hnsw_m} if self.hnsw else {}),
                **({"query_max_length": self.student.model.config.query_max_length,
                    "queries_truncated": self.queries_truncated} if self.student else {})}


class HybridRetriever(Stage):
    """BM25 and dense retrieval fused (:func:`ranker.fusion.interpolate`), each ``k`` deep, cut to ``k``."""

    name = "hybrid"

    def __init__(self, bm25: Stage, dense: DenseRetriever, weight: float, k: int = 1000):
        if not 0 <= weight <= 1:
            raise RankerError(f"the hybrid weight must lie in [0, 1], got {weight}")
        self.bm25, self.dense, self.weight, self.k = bm25, dense, weight, k

    def transform(self, queries: Mapping[str, Query], candidates: Ranking | None = None) -> Ranking:
        """Raises RankerError when none of BM25's hits is in the store: the index and the store hold different
        collections, and fusing them would interleave two unrelated lists."""
        lexical = self.bm25(queries)
        hits = {d.docno for docs in lexical.values() for d in docs}
        if hits and not any(docno in self.dense.store for docno in hits):
            raise RankerError(f"none of BM25's {len(hits):,} hits is in the store {self.dense.store.path}: the index "
                              "and the store hold different collections (build both from the same one)")
        fused = sort_ranking(interpolate(lexical, self.dense(queries), self.weight))
        return {qid: docs[:self.k] for qid, docs in fused.items()}

    def config(self) -> dict:
        return {"stage": self.name, "weight": self.weight, "k": self.k, "stages": [self.bm25.config(),
                                                                                  self.dense.config()]}
