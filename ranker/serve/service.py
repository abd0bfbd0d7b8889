"""What the server serves: the TwinBERT student, its embedding store and (for ``/search``) a BM25 index, loaded
once; passages found by id or by the hash of their text, unseen texts encoded on the fly, counted. An edit of the
store (``rank store add|delete|compact``) committed while the server runs is picked up by the next request
(:meth:`RerankService.snapshot`); a request reads one commit from start to end. A commit the server cannot serve (a
store rebuilt by another model, damaged files) is refused as start-up would refuse it: the last good commit goes on
answering, and ``/health`` says why.

Every method here is plain, blocking library code (the HTTP layer runs it on one worker thread); scores are
the student's raw logits, as ``rank run --reranker twinbert`` gives them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch

from ranker.errors import RankerError
from ranker.models.student import Student
from ranker.models.twinbert import TwinBert
from ranker.serve.config import ServeConfig
from ranker.store.embeddings import EmbeddingStore, StoreMismatchError, commit_stamp
from ranker.types import Query

log = logging.getLogger(__name__)


@dataclass
class Passages:
    """The vectors of one request's documents and where each came from; ``starts``: where each document's rows
    begin among ``vectors`` when a document is stored as windows (``None``: a row each)."""

    vectors: np.ndarray
    by_id: int = 0
    by_hash: int = 0
    encoded: int = 0
    ms: float = 0.0
    starts: np.ndarray | None = None

    def best(self, logits: np.ndarray) -> np.ndarray:
        """One logit a document from one a row: a document's best window (MaxP)."""
        return logits if self.starts is None else np.maximum.reduceat(logits, self.starts)


class RerankService:
    """The loaded model, store and index.

    Raises:
        StoreMismatchError: The store was built by another model (the server refuses to start).
    """

    def __init__(self, config: ServeConfig):
        torch.set_num_threads(config.threads)
        self.config = config
        self.student = Student.open(config.model, config.store, config.query_backend, config.max_batch, device="cpu")
        self.retriever = None
        if config.index is not None:
            from ranker.first_stage.bm25 import Bm25Config, Bm25Retriever

            self.retriever = Bm25Retriever(config.index, Bm25Config(threads=1))
        self.fusion_weight = self._fusion_weight()
        """The student's weight in ``/search``'s fusion with BM25 (read once); ``None`` with ``--fusion none``."""
        self.model_fingerprint = self.student.fingerprint
        """The fingerprint of the passage side loaded (its store's, checked at start-up): every commit served has it."""
        self.reloads: Counter[str] = Counter()
        """Commits of the store met while serving, by outcome: ``loaded`` or ``refused``."""
        self.refused: dict | None = None
        """Why the store's last commit is not served (``None``: it is)."""
        self._refused_stamp: tuple | None = None

    def _fusion_weight(self) -> float | None:
        from ranker.rerank.fused import model_weight

        if self.config.fusion == "none":
            return None
        return model_weight(self.model.path) if self.config.fusion_weight is None else self.config.fusion_weight

    @property
    def model(self) -> TwinBert:
        return self.student.model

    @property
    def store(self) -> EmbeddingStore:
        """The commit the last :meth:`snapshot` found."""
        return self.student.store

    def encode_queries(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        """Query vectors, one row per text (one forward pass), and how many texts were cut to the query cap."""
        return self.student.counted_query_vectors(texts)

    def reads_tokens(self, text: str) -> bool:
        """Whether the query tower's tokenizer finds any token in ``text`` (it drops control characters, a BOM,
        lone combining marks: a query of only those would be scored as an empty one)."""
        tokenizer = self.model.query_tower.tokenizer.backend_tokenizer
        return bool(tokenizer.encode(text, add_special_tokens=False).ids)

    def snapshot(self) -> EmbeddingStore:
        """The store's last commit (one ``stat`` when nothing changed). A commit that cannot be opened, or was
        built by another model than the one loaded, is refused (checked once per commit, one log line): the
        commit served before goes on."""
        try:
            stamp = commit_stamp(self.store.path)
        except OSError:  # the folder is gone for now (a rebuild): serve what is open
            return self.store
        if stamp in (self.store.stamp, self._refused_stamp):
            return self.store
        try:
            store = EmbeddingStore.load(self.store.path)
            if store.fingerprint != self.model_fingerprint:
                raise StoreMismatchError(f"{store.path} was rebuilt by the model with fingerprint "
                                         f"{store.fingerprint}, not the one served ({self.model_fingerprint})")
        except RankerError as e:
            self._refuse(stamp, e)
            return self.store
        self.student.store, self.refused, self._refused_stamp = store, None, None
        self.reloads["loaded"] += 1
        log.info("%s: serving its commit %d", store.path, store.generation)
        return store

    def _refuse(self, stamp: tuple, error: RankerError) -> None:
        self._refused_stamp = stamp
        self.reloads["refused"] += 1
        self.refused = {"reason": str(error), "since": datetime.now(UTC).isoformat(timespec="seconds"),
                        "serving_generation": self.store.generation}
        log.warning("%s; still serving the commit opened before (generation %d)", error, self.store.generation)

    def locate(self, store: EmbeddingStore, ids: Sequence[str | None], texts: Sequence[str | None],
               strict: bool = True) -> tuple[list[int | None], list[str | None]]:
        """The row in ``store`` (a :meth:`snapshot`) of each document (its first window's), by id (first, where
        both are given) or by the hash of its text (a long document sent whole finds its windows); ``None`` for a
        text the store lacks. Also the ids found (``None`` where a document was not found by id). Cheap: no model
        work; one lookup per document and way.

        Raises:
            KeyError: ``strict`` and an id the store lacks, as ``(position, id)``; not strict, its text is tried.
        """
        rows: list[int | None] = [None] * len(ids)
        found: list[str | None] = list(ids)
        given = [i for i, docno in enumerate(ids) if docno is not None]
        for i, row in zip(given, store.rows_of([ids[i] for i in given]), strict=True):
            if row is None and strict:
                raise KeyError((i, ids[i]))
            rows[i] = row
            found[i] = ids[i] if row is not None else None
        wanted = [i for i in range(len(ids)) if rows[i] is None]
        for i, row in zip(wanted, store.rows_of_texts([texts[i] or "" for i in wanted]), strict=True):
            rows[i] = row
        return rows, found

    @property
    def passage_tokens(self) -> int:
        """Tokens of a passage the model reads, its special tokens included."""
        return self.model.config.doc_max_length

    def cut(self, texts: Sequence[str | None], max_tokens: int) -> list[str | None]:
        """Each text cut after its first ``max_tokens`` tokens (the passage tokenizer's, special tokens not
        counted), at the end of that token's characters; a shorter text is returned as it is."""
        tokenizer = (self.model.doc_encoder.tokenizer if self.model.config.doc_encoder
                     else self.model.doc_tower.tokenizer)
        given = [i for i, t in enumerate(texts) if t]
        out = list(texts)
        if not given:
            return out
        offsets = tokenizer([texts[i] for i in given], add_special_tokens=False, return_offsets_mapping=True,
                            truncation=False)["offset_mapping"]
        for i, spans in zip(given, offsets, strict=True):
            if len(spans) > max_tokens:
                out[i] = texts[i][:spans[max_tokens - 1][1]]
        return out

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors of texts the store lacks, encoded now and quantized as the store's vectors are."""
        return self.student.encode_passages(texts, self.config.encode_batch)

    def passages(self, store: EmbeddingStore, ids: Sequence[str | None], rows: Sequence[int | None],
                 encoded: np.ndarray | None = None, ms: float = 0.0) -> Passages:
        """Vectors of the documents :meth:`locate` found at ``rows`` of ``store`` (every window of a document
        stored as windows); those it did not find (row ``None``) take the rows of ``encoded``
        (:meth:`encode_passages`), in order."""
        started = time.perf_counter()
        vectors, starts = self.student.passage_vectors(rows, encoded, store)
        unseen = sum(row is None for row in rows)
        by_id = sum(docno is not None for docno in ids)
        return Passages(vectors, by_id, len(rows) - by_id - unseen, unseen,
                        ms + 1000 * (time.perf_counter() - started), None if len(vectors) == len(rows) else starts)

    def cross(self, query: np.ndarray, passages: np.ndarray) -> np.ndarray:
        """Logits of one query vector against passage vectors."""
        return self.student.cross(query, passages)

    def bm25(self, query: str, depth: int) -> list[tuple[str, float, str]]:
        """BM25's top ``depth``: ``(docno, score, text)``.

        Raises:
            RankerError: The server has no index.
        """
        if self.retriever is None:
            raise RankerError("this server has no index: start it with --index DIR for /search")
        hits = self.retriever.search({"q": Query("q", query)}, progress=False, k=depth)["q"]
        return [(h.docno, h.score, self.retriever.text(h.docno)) for h in hits]

    def fused(self, logits: np.ndarray, bm25: Sequence[float]) -> list[float]:
        """``/search``'s scores: the student's logits fused with BM25's scores of the same hits by the rule
        ``rank run`` uses (:func:`ranker.fusion.interpolate`), or the logits alone with ``--fusion none``."""
        from ranker.fusion import interpolate
        from ranker.types import ScoredDoc

        if self.fusion_weight is None:
            return [float(s) for s in logits]
        hits = [str(i) for i in range(len(bm25))]
        fused = {d.docno: d.score for d in interpolate(
            {"q": [ScoredDoc("q", h, float(s)) for h, s in zip(hits, bm25)]},
            {"q": [ScoredDoc("q", h, float(s)) for h, s in zip(hits, logits)]}, self.fusion_weight)["q"]}
        return [fused[h] for h in hits]

    def health(self) -> dict:
        store = self.snapshot()
        return {"status": "ok", "model": str(self.model.path), "fingerprint": self.model_fingerprint,
                "query_backend": self.student.query_encoder.backend,
                "query_max_length": self.model.config.query_max_length,
                "store": {"path": str(store.path), "passages": len(store), "dtype": store.dtype,
                          "text_hashes": store.hashes is not None, "generation": store.generation,
                          "refused": self.refused},
                "index": str(self.config.index) if self.config.index else None,
                "search_fusion": {"fusion": self.config.fusion, "student_weight": self.fusion_weight},
                "score": "relevance_score = sigmoid(logit); raw_scores: true gives the logit"}
