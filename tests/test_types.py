"""The one tie rule (best_first): score descending, ties by docno descending, docno-less documents after, as sent."""
from __future__ import annotations

from ranker.types import ScoredDoc, best_first, sort_docs


def test_ties_go_by_docno_descending_then_documents_without_one_in_the_order_given():
    scores = [1.0, 2.0, 2.0, 2.0, 2.0, 0.5]
    docnos = [None, None, "a", "b", None, "z"]
    assert best_first(scores, docnos) == [3, 2, 1, 4, 0, 5]


def test_sort_docs_is_best_first_over_docnos():
    docs = [ScoredDoc("q", d, s) for d, s in [("d1", 0.3), ("d2", 0.9), ("d3", 0.9), ("d10", 0.9)]]
    assert [d.docno for d in sort_docs(docs)] == ["d3", "d2", "d10", "d1"]
