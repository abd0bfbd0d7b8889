"""Typed records shared by every stage: queries, documents, judgements and scored documents.

Ids are always ``str``; readers convert, nothing else does.
"""

from __future__ import annotations

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


def sort_docs(docs: list[ScoredDoc]) -> list[ScoredDoc]:
    """Score descending, ties by docno descending: the order trec_eval evaluates in."""
    by_docno = sorted(docs, key=lambda d: d.docno, reverse=True)
    return sorted(by_docno, key=lambda d: -d.score)  # stable: ties keep docno order


def sort_ranking(ranking: Ranking) -> Ranking:
    """Every query's list sorted by :func:`sort_docs`; queries in the order given."""
    return {qid: sort_docs(docs) for qid, docs in ranking.items()}


def cutoff(ranking: Ranking, k: int) -> Ranking:
    """The top ``k`` of each (sorted) query list."""
    return {qid: docs[:k] for qid, docs in sort_ranking(ranking).items()}
