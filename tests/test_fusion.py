from __future__ import annotations

import dataclasses
import json

import pytest

from ranker.errors import RankerError
from ranker.fusion import fuse, znorm
from ranker.rerank.ensemble import load_ensemble
from ranker.rerank.registry import RerankerConfig, make_reranker
from ranker.train.fusion_weights import pick_weights
from ranker.types import Qrel, Query, ScoredDoc

A = {"q": [ScoredDoc("q", "d1", 3.0), ScoredDoc("q", "d2", 2.0), ScoredDoc("q", "d3", 1.0)]}
B = {"q": [ScoredDoc("q", "d1", -5.0), ScoredDoc("q", "d2", 0.0), ScoredDoc("q", "d3", 5.0)]}


def test_znorm_and_fuse():
    z = znorm(A)["q"]
    assert z["d1"] == pytest.approx(-z["d3"]) and z["d2"] == pytest.approx(0.0)
    assert fuse([A, B], [1.0, 0.0])["q"][0].score == pytest.approx(z["d1"])
    even = {d.docno: d.score for d in fuse([A, B], [0.5, 0.5])["q"]}
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in even.values())  # the two cancel out


def test_scores_near_the_float_limit_keep_their_order_in_a_fusion():
    """Scores of ±1e300 overflow a plain mean and variance: the component would silently count for nothing."""
    huge = {"q": [ScoredDoc("q", "a", 1e300), ScoredDoc("q", "b", -1e300), ScoredDoc("q", "c", 0.0)]}
    plain = {"q": [ScoredDoc("q", "a", 1.0), ScoredDoc("q", "b", -1.0), ScoredDoc("q", "c", 0.0)]}
    assert znorm(huge)["q"] == pytest.approx(znorm(plain)["q"])
    fused = fuse([huge, plain], [1.0, 0.0])["q"]
    assert [d.docno for d in sorted(fused, key=lambda d: -d.score)] == ["a", "c", "b"]


def test_pick_weights_follows_the_judgements():
    qrels = [Qrel("q", "d3", 2)]
    b = {"q": [ScoredDoc("q", "d1", -5.0), ScoredDoc("q", "d2", 0.0), ScoredDoc("q", "d3", 1.0)]}
    weights, score = pick_weights([A, b], qrels, step=0.25)
    assert weights == (0.0, 1.0)  # b alone ranks d3 first; mixing in A first costs that
    assert score == pytest.approx(1.0)


def test_ensemble_from_a_description(tmp_path):
    spec = tmp_path / "ensemble.json"
    spec.write_text(json.dumps({"components": [{"reranker": "identity"}], "weights": [1.0]}))
    reranker = make_reranker("ensemble", RerankerConfig(model=str(spec)))
    ranking = reranker({"q": Query("q", "text")}, A)
    assert [d.docno for d in ranking["q"]] == ["d1", "d2", "d3"]
    spec.write_text("{}")
    with pytest.raises(RankerError, match="not an ensemble description"):
        make_reranker("ensemble", RerankerConfig(model=str(spec)))


def test_ensemble_and_fuse_commands(tmp_path):
    from ranker.io.formats import read_run, write_qrels, write_run

    from .conftest import rank

    write_run(A, tmp_path / "a.trec", "a")
    b = {"q": [ScoredDoc("q", "d1", -5.0), ScoredDoc("q", "d2", 0.0), ScoredDoc("q", "d3", 1.0)]}
    write_run(b, tmp_path / "b.trec", "b")
    write_qrels([Qrel("q", "d3", 2)], tmp_path / "qrels.txt")
    spec = tmp_path / "ens.json"
    rank("ensemble", "--qrels", str(tmp_path / "qrels.txt"), "--component", "cross-encoder=teacher", "--component",
         "identity", "--step", "0.25", "--output", str(spec), str(tmp_path / "a.trec"), str(tmp_path / "b.trec"))
    written = json.loads(spec.read_text())
    assert written["weights"] == [0.0, 1.0]  # b ranks d3 first, as in the test above
    assert written["components"] == [{"reranker": "cross-encoder", "model": "teacher"}, {"reranker": "identity"}]
    assert written["type"] == "ensemble" and written["format_version"] == 1
    assert written["validation"]["components"] == [pytest.approx(0.5), 1.0]
    rank("fuse", "--ensemble", str(spec), "--output", str(tmp_path / "f.trec"),
         str(tmp_path / "a.trec"), str(tmp_path / "b.trec"))
    assert [d.docno for d in read_run(tmp_path / "f.trec")["q"]] == ["d3", "d2", "d1"]
    result = rank("fuse", "--ensemble", str(spec), "--output", str(tmp_path / "g.trec"), str(tmp_path / "a.trec"),
                  check=False)
    assert result.returncode == 2 and "2 components but 1 runs" in result.stderr
    assert not (tmp_path / "g.trec").exists()
    # a component of weight 0 needs no run ('-'); one that counts does
    rank("fuse", "--ensemble", str(spec), "--output", str(tmp_path / "h.trec"), "-", str(tmp_path / "b.trec"))
    assert [d.docno for d in read_run(tmp_path / "h.trec")["q"]] == ["d3", "d2", "d1"]
    result = rank("fuse", "--ensemble", str(spec), "--output", str(tmp_path / "i.trec"), str(tmp_path / "a.trec"),
                  "-", check=False)
    assert result.returncode == 2 and "only for a component of weight 0" in result.stderr


def test_an_ensemble_does_not_run_a_component_of_weight_zero():
    from ranker.pipeline import Identity, Reranker
    from ranker.rerank.ensemble import EnsembleReranker

    class Refuses(Reranker):
        def rerank(self, queries, candidates):
            raise AssertionError("a weight-0 component was run")

    fused = EnsembleReranker([Identity(), Refuses()], [1.0, 0.0]).rerank({"q": Query("q", "t")}, A)
    assert [d.docno for d in fused["q"]] == ["d1", "d2", "d3"]


def test_ensemble_models_are_found_beside_the_description(tmp_path):
    seen = []
    spec = tmp_path / "ensemble.json"
    (tmp_path / "teacher").mkdir()
    spec.write_text(json.dumps({"components": [{"reranker": "teacher", "model": "teacher"},
                                               {"reranker": "biencoder", "model": "some/hub-name"}],
                                "weights": [0.5, 0.5]}))
    load_ensemble(spec, lambda name, model: seen.append(model) or make_reranker("identity"))
    assert seen == [str(tmp_path / "teacher"), "some/hub-name"]


def test_shipped_ensemble_teacher_reranks_and_matches_fusing_its_components(data):
    """models/ensemble-msmarco.json loads (teacher from models/, bundled bi-encoder, BM25) and fuses its parts."""
    from ranker.io.formats import read_run
    from ranker.io.texts import texts_for
    from ranker.models.loading import shipped_model

    msmarco = data / "msmarco-passage"
    run = read_run(msmarco / "runs" / "bm25.dl19.top100.trec")
    qid = min(run)
    candidates = {qid: run[qid][:8]}
    queries = {qid: Query(qid, dict(line.split("\t", 1) for line in
                                    (msmarco / "topics" / "dl19.tsv").read_text().splitlines())[qid])}
    options = RerankerConfig(texts=texts_for([msmarco / "passages" / "dl19.tsv"], {d.docno for d in run[qid][:8]}))
    shipped = str(shipped_model("ensemble-msmarco.json"))
    ensemble = make_reranker("ensemble", dataclasses.replace(options, model=shipped))
    fused = ensemble.rerank(queries, candidates)
    parts = [c.rerank(queries, candidates) for c in ensemble.components]
    expected = fuse(parts, ensemble.weights)
    assert {d.docno: d.score for d in fused[qid]} == pytest.approx({d.docno: d.score for d in expected[qid]})
    assert [c.name for c in ensemble.components] == ["cross-encoder", "biencoder", "identity"]


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), 1e308, "0.5", True])
def test_weights_must_be_finite_numbers_in_fuse_an_ensemble_and_its_file(weight, tmp_path):
    from ranker.pipeline import Identity
    from ranker.rerank.ensemble import EnsembleReranker, read_ensemble

    with pytest.raises(RankerError, match="weight 2 is .*: weights must be finite numbers"):
        fuse([A, B], [1.0, weight])
    with pytest.raises(RankerError, match="weight 2 is"):
        EnsembleReranker([Identity(), Identity()], [1.0, weight])
    spec = tmp_path / "ens.json"  # json.dumps writes NaN and Infinity, which Python's json reads back
    spec.write_text(json.dumps({"type": "ensemble", "format_version": 1, "weights": [1.0, weight],
                                "components": [{"reranker": "identity"}, {"reranker": "identity"}]}))
    with pytest.raises(RankerError, match=f"{spec}: weight 2 is"):
        read_ensemble(spec)


def test_fuse_and_evaluate_refuse_to_overwrite_an_input(tmp_path):
    from ranker.io.formats import write_qrels, write_run

    from .conftest import rank

    write_run(A, tmp_path / "a.trec", "a")
    write_qrels([Qrel("q", "d3", 2)], tmp_path / "qrels.txt")
    spec = tmp_path / "ens.json"
    spec.write_text(json.dumps({"type": "ensemble", "format_version": 1, "weights": [1.0],
                                "components": [{"reranker": "identity"}]}))
    before = (tmp_path / "a.trec").read_bytes()
    fused = rank("fuse", "--ensemble", str(spec), "--output", str(tmp_path / "a.trec"), str(tmp_path / "a.trec"),
                 check=False)
    evaluated = rank("evaluate", "--qrels", str(tmp_path / "qrels.txt"), "--per-query", str(tmp_path / "a.trec"),
                     str(tmp_path / "a.trec"), check=False)
    for result in (fused, evaluated):
        assert result.returncode == 2 and "is also an input" in result.stderr
    assert (tmp_path / "a.trec").read_bytes() == before
