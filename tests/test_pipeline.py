"""Pipeline operators: ``>>`` feeds one stage's ranking to the next, ``% k`` keeps the top k, rankings stay sorted."""

from __future__ import annotations

import pytest

from ranker.errors import RankerError
from ranker.pipeline import Compose, Cutoff, Identity, Reranker, Stage, pending, rescored
from ranker.types import Query, ScoredDoc

QUERIES = {"q1": Query("q1", "one"), "q2": Query("q2", "two")}


class Fixed(Stage):
    """A first stage returning a fixed, unsorted ranking."""

    name = "fixed"

    def transform(self, queries, candidates):
        return {"q1": [ScoredDoc("q1", d, s) for d, s in [("a", 1.0), ("b", 3.0), ("c", 2.0), ("d", 2.0)]],
                "q2": [ScoredDoc("q2", "x", 0.5)]}


class Negate(Reranker):
    """Reverses the order: the score becomes minus the candidate's score."""

    name = "negate"

    def rerank(self, queries, candidates):
        docs = pending(queries, candidates)
        return rescored(docs, [-d.score for d in docs])


def test_a_stage_sorts_by_score_then_docno_descending():
    ranking = Fixed()(QUERIES)
    assert [d.docno for d in ranking["q1"]] == ["b", "d", "c", "a"]  # c and d tie: trec_eval's order, docno desc


def test_compose_feeds_the_first_stage_to_the_second():
    pipeline = Fixed() >> Negate()
    assert isinstance(pipeline, Compose) and pipeline.name == "fixed>>negate"
    assert [d.docno for d in pipeline(QUERIES)["q1"]] == ["a", "d", "c", "b"]


def test_cutoff_keeps_the_top_k_of_the_sorted_ranking():
    ranking = (Fixed() % 2)(QUERIES)
    assert [d.docno for d in ranking["q1"]] == ["b", "d"] and len(ranking["q2"]) == 1
    assert [d.docno for d in (Fixed() >> Negate() % 1)(QUERIES)["q1"]] == ["a"]
    assert (Fixed() % 3).config() == {"stage": "compose", "stages": [{"stage": "fixed"}, {"stage": "cutoff", "k": 3}]}


def test_identity_keeps_the_candidates_of_the_given_queries_only():
    candidates = Fixed()(QUERIES)
    kept = Identity()({"q2": QUERIES["q2"]}, candidates)
    assert kept == {"q2": candidates["q2"]}


def test_a_reranker_without_candidates_is_an_error():
    with pytest.raises(RankerError, match="'negate' needs candidates"):
        Negate()(QUERIES)
    with pytest.raises(RankerError, match="'top5' needs candidates"):
        Cutoff(5)(QUERIES)


def test_rescored_needs_one_score_per_document():
    docs = pending(QUERIES, Fixed()(QUERIES))
    with pytest.raises(ValueError):
        rescored(docs, [1.0])
