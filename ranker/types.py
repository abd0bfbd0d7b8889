"""Typed records shared by every stage: queries, documents, judgements and scored documents.

Ids are always ``str``; readers convert, nothing else does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

FIRST_RANK = 1
"""Rank of the top document in TREC run files (trec_eval's convention)."""


class Query(NamedTuple):
    qid: str
    text: str


class Doc(NamedTuple):
    docno: str
    text: str
    title: str = ""

    @property
    def contents(self) -> str:
        """What a ranker sees: ``title + " " + text`` (BEIR/Pyserini convention), or the text alone."""
        return f"{self.title} {self.text}" if self.title else self.text


class Qrel(NamedTuple):
    qid: str
    docno: str
    relevance: int


class ScoredDoc(NamedTuple):
    qid: str
    docno: str
    score: float


Ranking = dict[str, list[ScoredDoc]]
"""qid -> scored documents, best first."""


def best_first(scores: Sequence[float], docnos: Sequence[str | None]) -> list[int]:
    """Positions of ``scores`` best first, the one tie rule of every ranking this project writes or serves:
    score descending, ties by docno descending (the order trec_eval evaluates in); documents without a docno
    (texts sent to the server) after those with one at the same score, in the order given."""
    by_docno = sorted(range(len(scores)), key=lambda i: docnos[i] or "", reverse=True)  # stable: ties keep order
    return sorted(by_docno, key=lambda i: -scores[i])


def sort_docs(docs: list[ScoredDoc]) -> list[ScoredDoc]:
    """Score descending, ties by docno descending (:func:`best_first`)."""
    return [docs[i] for i in best_first([d.score for d in docs], [d.docno for d in docs])]


def sort_ranking(ranking: Ranking) -> Ranking:
    """Every query's list sorted by :func:`sort_docs`; queries in the order given."""
    return {qid: sort_docs(docs) for qid, docs in ranking.items()}


def cutoff(ranking: Ranking, k: int) -> Ranking:
    """The top ``k`` of each (sorted) query list."""
    return {qid: docs[:k] for qid, docs in sort_ranking(ranking).items()}
