"""Lexical evidence kept: a student's ranking fused with BM25's score for the same documents.

A student reads a passage through a 6-layer encoder trained on one domain; BM25 reads every word of it. Off the
training domain the interpolation of the two beats either alone (Wang, Zhuang & Zuccon 2021; BEIR), so every
student ranking is by default :func:`ranker.fusion.interpolate` of the student's score and BM25's, z-normalised per
query over the candidates: ``w * z(student) + (1 - w) * z(bm25)``.

Where BM25's scores come from (:class:`LexicalScores`):

* ``first-stage``: the candidates' own scores — the BM25 first stage's, or those of a run given with
  ``--candidates`` (a BM25 run's are BM25's; another system's run is fused with its own first-stage score);
* ``index``: computed from the Lucene index for every candidate (after a dense or hybrid first stage, whose
  candidates BM25 did not all score).

The student's weight ``w`` is the model's own (``fusion.student_weight`` in its ``ranker.json``, recorded where
validation picked it: :func:`ranker.train.fusion_weights.record_fusion`), else :data:`DEFAULT_STUDENT_WEIGHT`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ranker.errors import RankerError
from ranker.fusion import interpolate
from ranker.io.artifact import read_metadata
from ranker.pipeline import Reranker
from ranker.types import Query, Ranking, ScoredDoc

if TYPE_CHECKING:
    from ranker.first_stage.bm25 import Bm25Retriever

FUSIONS = ("bm25", "none")
"""``--fusion``: ``bm25`` (the default) or ``none`` (the pure student)."""
DEFAULT_FUSION = "bm25"
DEFAULT_STUDENT_WEIGHT = 0.75
"""The student's weight for a model that records none of its own: the weight validation picked for the default
student (docs/experiments.md, "Your own collection")."""
LEXICAL_SOURCES = ("first-stage", "index")


@dataclass(frozen=True)
class FusionConfig:
    """How a student's ranking is fused with BM25: ``kind`` (:data:`FUSIONS`) and the student's ``weight``
    (``None``: the model's recorded weight, else :data:`DEFAULT_STUDENT_WEIGHT`)."""

    kind: str = DEFAULT_FUSION
    weight: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in FUSIONS:
            raise RankerError(f"--fusion must be one of {', '.join(FUSIONS)}, not {self.kind!r}")
        if self.weight is not None and not 0 <= self.weight <= 1:
            raise RankerError(f"--fusion-weight must lie in [0, 1], got {self.weight}")


def model_weight(model: str | Path | None) -> float:
    """The student weight recorded in ``model``'s ``ranker.json`` (``fusion.student_weight``), else the default."""
    if model is None or not Path(model).is_dir():
        return DEFAULT_STUDENT_WEIGHT
    recorded = read_metadata(Path(model)).get("fusion", {}).get("student_weight")
    return DEFAULT_STUDENT_WEIGHT if recorded is None else float(recorded)


class LexicalScores:
    """BM25's score of each candidate: the candidates' own (``first-stage``), or computed from ``index``."""

    def __init__(self, source: str, index: Bm25Retriever | None = None):
        if source not in LEXICAL_SOURCES:
            raise RankerError(f"BM25 scores come from {' or '.join(LEXICAL_SOURCES)}, not {source!r}")
        if source == "index" and index is None:
            raise RankerError("fusing with BM25 after a dense first stage needs the BM25 index: give --index DIR "
                              "(or --fusion none for the student alone)")
        self.source, self.index = source, index

    def __call__(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        if self.source == "first-stage":
            return {qid: list(docs) for qid, docs in candidates.items() if qid in queries}
        return {qid: [ScoredDoc(qid, d, s) for d, s in self.index.score_docs(
            queries[qid].text, [doc.docno for doc in docs]).items()]
            for qid, docs in candidates.items() if qid in queries}


class FusedReranker(Reranker):
    """A reranker's scores fused with BM25's (:func:`ranker.fusion.interpolate`), ``weight`` on the reranker.

    ``timing`` is the inner reranker's (when it keeps one) plus ``bm25`` (scores computed from the index) and
    ``fusion``; other attributes (``student``, ``query_encoder``, ``queries_truncated``) are the inner one's.
    """

    def __init__(self, reranker: Reranker, lexical: LexicalScores, weight: float):
        if not 0 <= weight <= 1:
            raise RankerError(f"the fusion weight must lie in [0, 1], got {weight}")
        self.reranker, self.lexical, self.weight = reranker, lexical, weight
        self.name = f"{reranker.name}+bm25"
        self.timing = {**getattr(reranker, "timing", {}), "bm25": 0.0, "fusion": 0.0}

    def __getattr__(self, name: str):
        if name == "reranker":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.reranker, name)

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        neural = self.reranker.rerank(queries, candidates)
        started = time.perf_counter()
        lexical = self.lexical(queries, candidates)
        scored = time.perf_counter()
        fused = interpolate(lexical, neural, self.weight)
        self.timing.update(getattr(self.reranker, "timing", {}))
        self.timing["bm25"] += scored - started
        self.timing["fusion"] += time.perf_counter() - scored
        return fused

    def config(self) -> dict:
        return {"stage": "fusion", "fusion": "bm25", "student_weight": self.weight,
                "rule": "w * z(student) + (1 - w) * z(bm25), z-scores per query over the candidates",
                "bm25_scores": self.lexical.source, "stages": [self.reranker.config()]}


class AlreadyFused(Reranker):
    """A student reranking the candidates of a hybrid first stage over the same student, store and weight: those
    candidates' scores are already the student's fused with BM25's by :func:`ranker.fusion.interpolate` (BM25 and
    the same nearest neighbours, the same weight), so they are kept as they are; scoring them again would only
    re-normalise the same two scores over fewer documents."""

    name = "twinbert+bm25"

    def __init__(self, reranker: Reranker, weight: float):
        self.reranker, self.weight = reranker, weight

    def __getattr__(self, name: str):
        if name == "reranker":
            raise AttributeError(name)
        return getattr(self.reranker, name)

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        return {qid: list(docs) for qid, docs in candidates.items() if qid in queries}

    def config(self) -> dict:
        return {"stage": "fusion", "fusion": "bm25", "student_weight": self.weight,
                "rule": "w * z(student) + (1 - w) * z(bm25), computed by the hybrid first stage over the same "
                        "student: its scores are kept", "bm25_scores": "hybrid first stage",
                "stages": [self.reranker.config()]}
