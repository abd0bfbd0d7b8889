from __future__ import annotations

import json

import pytest

from ranker.errors import RankerError
from ranker.fusion import fuse, pick_weights, znorm
from ranker.rerankers import RerankerOptions, make_reranker
from ranker.types import Qrel, Query, ScoredDoc

A = {"q": [ScoredDoc("q", "d1", 3.0), ScoredDoc("q", "d2", 2.0), ScoredDoc("q", "d3", 1.0)]}
B = {"q": [ScoredDoc("q", "d1", -5.0), ScoredDoc("q", "d2", 0.0), ScoredDoc("q", "d3", 5.0)]}


def test_znorm_and_fuse():
    z = znorm(A)["q"]
    assert z["d1"] == pytest.approx(-z["d3"]) and z["d2"] == pytest.approx(0.0)
    assert fuse([A, B], [1.0, 0.0])["q"][0].score == pytest.approx(z["d1"])
    even = {d.docno: d.score for d in fuse([A, B], [0.5, 0.5])["q"]}
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in even.values())  # the two cancel out


def test_pick_weights_follows_the_judgements():
    qrels = [Qrel("q", "d3", 2)]
    b = {"q": [ScoredDoc("q", "d1", -5.0), ScoredDoc("q", "d2", 0.0), ScoredDoc("q", "d3", 1.0)]}
    weights, score = pick_weights([A, b], qrels, step=0.25)
    assert weights == (0.0, 1.0)  # b alone ranks d3 first; mixing in A first costs that
    assert score == pytest.approx(1.0)


def test_ensemble_from_a_description(tmp_path):
    spec = tmp_path / "ensemble.json"
    spec.write_text(json.dumps({"components": [{"reranker": "identity"}], "weights": [1.0]}))
    reranker = make_reranker("ensemble", RerankerOptions(model=str(spec)))
    ranking = reranker({"q": Query("q", "text")}, A)
    assert [d.docno for d in ranking["q"]] == ["d1", "d2", "d3"]
    spec.write_text("{}")
    with pytest.raises(RankerError, match="not an ensemble description"):
        make_reranker("ensemble", RerankerOptions(model=str(spec)))
