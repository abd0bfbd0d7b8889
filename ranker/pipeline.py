"""Stages of a ranking pipeline: queries (and optionally candidates) in, a ranking out.

``Bm25`` retrieves; a reranker rescores the candidates it is given. Stages compose PyTerrier-style with
``>>`` (feed one stage's ranking to the next) and ``% k`` (keep the top ``k``)::

    pipeline = Bm25(searcher) % 100 >> Identity()
    ranking = pipeline(queries)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from ranker.errors import RankerError
from ranker.types import Query, Ranking, ScoredDoc, cutoff, sort_ranking


class Stage:
    """One step of a pipeline. Subclasses implement :meth:`transform`."""

    name: str = "stage"

    def transform(self, queries: Mapping[str, Query], candidates: Ranking | None) -> Ranking:
        raise NotImplementedError

    def __call__(self, queries: Mapping[str, Query], candidates: Ranking | None = None) -> Ranking:
        return sort_ranking(self.transform(queries, candidates))

    def __rshift__(self, other: Stage) -> Stage:
        return Compose(self, other)

    def __mod__(self, k: int) -> Stage:
        return Compose(self, Cutoff(k))

    def config(self) -> dict:
        return {"stage": self.name}


class Compose(Stage):
    """``first`` then ``second`` on its output."""

    def __init__(self, first: Stage, second: Stage):
        self.first, self.second = first, second
        self.name = f"{first.name}>>{second.name}"

    def transform(self, queries: Mapping[str, Query], candidates: Ranking | None) -> Ranking:
        return self.second(queries, self.first(queries, candidates))

    def config(self) -> dict:
        return {"stage": "compose", "stages": [self.first.config(), self.second.config()]}


class Cutoff(Stage):
    """Keep the top ``k`` candidates of each query."""

    def __init__(self, k: int):
        self.k, self.name = k, f"top{k}"

    def transform(self, queries: Mapping[str, Query], candidates: Ranking | None) -> Ranking:
        return cutoff(_require(candidates, self), self.k)

    def config(self) -> dict:
        return {"stage": "cutoff", "k": self.k}


class Reranker(Stage):
    """A stage that rescores given candidates; subclasses implement :meth:`rerank`."""

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        raise NotImplementedError

    def transform(self, queries: Mapping[str, Query], candidates: Ranking | None) -> Ranking:
        candidates = _require(candidates, self)
        if not pending(queries, candidates):  # nothing to score: no model runs on an empty batch
            return {qid: [] for qid in candidates if qid in queries}
        return self.rerank(queries, candidates)


class Identity(Reranker):
    """Keeps the candidates' own scores: the baseline every reranker is compared with."""

    name = "identity"

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        return {qid: list(docs) for qid, docs in candidates.items() if qid in queries}


def pending(queries: Mapping[str, Query], candidates: Ranking) -> list[ScoredDoc]:
    """Every candidate of the given queries, in order: what a reranker scores."""
    return [d for qid, docs in candidates.items() if qid in queries for d in docs]


def rescored(docs: Sequence[ScoredDoc], scores: Iterable[float]) -> Ranking:
    """A ranking of ``docs`` with new ``scores`` (one per document, same order)."""
    ranking: Ranking = {}
    for d, s in zip(docs, scores, strict=True):
        ranking.setdefault(d.qid, []).append(ScoredDoc(d.qid, d.docno, float(s)))
    return ranking


def _require(candidates: Ranking | None, stage: Stage) -> Ranking:
    if candidates is None:
        raise RankerError(f"stage {stage.name!r} needs candidates from an earlier stage")
    return candidates
