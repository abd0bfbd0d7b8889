"""Lexical evidence kept: the student's ranking fused with BM25's by one rule (``ranker.fusion.interpolate``), by
default after every first stage, BM25's scores from the candidates or the index, the weight picked on several
validation sets and recorded in the model."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.errors import RankerError  # noqa: E402
from ranker.fusion import interpolate, znorm  # noqa: E402
from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.pipeline import Identity  # noqa: E402
from ranker.rerank.fused import FusedReranker, FusionConfig, LexicalScores, model_weight  # noqa: E402
from ranker.train.fusion_weights import Domain, pick_student, pick_student_weight, record_fusion  # noqa: E402
from ranker.types import Qrel, Query, ScoredDoc, sort_ranking  # noqa: E402


def ranking(qid: str, scores: dict[str, float]) -> dict[str, list[ScoredDoc]]:
    return {qid: [ScoredDoc(qid, d, s) for d, s in scores.items()]}


def test_interpolate_is_the_weighted_sum_of_z_scores_and_its_ends_are_each_ranking():
    bm25 = ranking("q", {"a": 10.0, "b": 8.0, "c": 1.0})
    student = ranking("q", {"a": 0.1, "b": 0.5, "c": 0.9})
    zb, zs = znorm(bm25)["q"], znorm(student)["q"]
    fused = {d.docno: d.score for d in interpolate(bm25, student, 0.3)["q"]}
    assert fused == pytest.approx({d: 0.7 * zb[d] + 0.3 * zs[d] for d in "abc"})
    order = lambda r: [d.docno for d in sort_ranking(r)["q"]]  # noqa: E731
    assert order(interpolate(bm25, student, 1.0)) == ["c", "b", "a"]
    assert order(interpolate(bm25, student, 0.0)) == ["a", "b", "c"]
    with pytest.raises(RankerError, match="must lie in"):
        interpolate(bm25, student, 1.5)


def test_a_document_one_side_lacks_takes_that_sides_lowest_z_score():
    fused = {d.docno: d.score for d in interpolate(ranking("q", {"a": 3.0, "b": 1.0}),
                                                   ranking("q", {"a": 1.0, "c": 2.0, "d": 0.0}), 0.5)["q"]}
    assert set(fused) == {"a", "b", "c", "d"}
    assert fused["c"] == pytest.approx(0.5 * -1.0 + 0.5 * 1.2247, abs=1e-3)


class Reversed(Identity):
    """A stand-in reranker: the candidates' scores negated."""

    name = "reversed"

    def rerank(self, queries, candidates):
        return {q: [ScoredDoc(q, d.docno, -d.score) for d in docs] for q, docs in candidates.items() if q in queries}


def test_the_fused_reranker_fuses_with_the_first_stages_scores_and_says_so():
    candidates = ranking("q", {"a": 3.0, "b": 2.0, "c": 1.0})
    queries = {"q": Query("q", "text")}
    fused = FusedReranker(Reversed(), LexicalScores("first-stage"), 0.4)
    out = fused(queries, candidates)
    assert out == sort_ranking(interpolate(candidates, Reversed()(queries, candidates), 0.4))
    config = fused.config()
    assert config["student_weight"] == 0.4 and config["bm25_scores"] == "first-stage"
    assert config["stages"] == [{"stage": "reversed"}] and set(fused.timing) >= {"bm25", "fusion"}
    bm25_alone = FusedReranker(Reversed(), LexicalScores("first-stage"), 0.0)(queries, candidates)
    assert [d.docno for d in bm25_alone["q"]] == ["a", "b", "c"]


def test_bm25_scores_from_an_index_are_required_after_a_dense_first_stage():
    with pytest.raises(RankerError, match="needs the BM25 index: give --index"):
        LexicalScores("index", None)
    with pytest.raises(RankerError, match="--fusion must be one of"):
        FusionConfig("rrf")


def test_the_weight_is_picked_on_the_mean_of_the_domains_and_recorded_in_the_model(tmp_path):
    qrels = [Qrel("q", "a", 1)]
    # BM25 is right on one domain, the student on the other: only a fusion weight near the middle gets both
    right_bm25 = Domain(ranking("q", {"a": 0.0, "b": 1.0}), ranking("q", {"a": 5.0, "b": 0.0}), qrels)
    right_student = Domain(ranking("q", {"a": 1.0, "b": 0.0}), ranking("q", {"a": 0.0, "b": 2.0}), qrels)
    best, curve = pick_student_weight({"one": right_bm25, "two": right_student}, step=0.25)
    assert set(curve) == {0.0, 0.25, 0.5, 0.75, 1.0}
    assert curve[best]["mean"] == max(v["mean"] for v in curve.values())
    assert curve[0.0]["one"] == 1.0 and curve[1.0]["two"] == 1.0 and curve[0.0]["two"] < 1.0
    torch.manual_seed(0)
    model = TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(tmp_path / "student")
    fingerprint = json.loads((model / "ranker.json").read_text())["doc_fingerprint"]
    assert model_weight(model) == model_weight(None)  # nothing recorded: the library default
    record_fusion(model, best, curve, "nDCG@10", {"one": "runs"})
    meta = json.loads((model / "ranker.json").read_text())
    assert meta["fusion"]["student_weight"] == best and meta["doc_fingerprint"] == fingerprint
    assert model_weight(model) == best
    assert TwinBert.load(model, device="cpu").fingerprint() == fingerprint


@pytest.mark.java
def test_bm25_scores_of_given_documents_equal_the_searchs(scifact_index):
    from ranker.first_stage.bm25 import Bm25Retriever

    bm25 = Bm25Retriever(scifact_index)
    query = "vitamin d deficiency and bone density"
    hits = bm25.search({"q": Query("q", query)}, progress=False, k=50)["q"]
    scored = bm25.score_docs(query, [h.docno for h in hits])
    # the search's scores are Anserini's, rounded to 4 decimals
    assert [scored[h.docno] for h in hits] == pytest.approx([h.score for h in hits], abs=6e-5)


def test_the_default_student_is_the_best_mean_among_those_not_below_the_start():
    curves = {"start": {0.5: {"a": 0.60, "b": 0.70, "mean": 0.65}},
              "forgets": {0.5: {"a": 0.80, "b": 0.69, "mean": 0.745}},  # best mean, but below the start on b
              "robust": {0.4: {"a": 0.70, "b": 0.71, "mean": 0.705}, 0.6: {"a": 0.72, "b": 0.66, "mean": 0.69}}}
    chosen, table = pick_student(curves, "start")
    assert chosen == "robust" and table["robust"]["weight"] == 0.4
    assert not table["forgets"]["eligible"] and table["start"]["eligible"]
    with pytest.raises(RankerError, match="zero-shot start"):
        pick_student(curves, "missing")


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory, data):
    """200 SciFact abstracts: a Lucene index and a 1-layer student's store of the same documents."""
    from ranker.first_stage.bm25 import build_index
    from ranker.io.sources import iter_docs
    from ranker.store.build import build_store

    root = tmp_path_factory.mktemp("fused")
    docs = [d for _, d in zip(range(200), iter_docs(data / "beir-scifact" / "corpus.jsonl"))]
    build_index(docs, root / "index")
    torch.manual_seed(0)
    model = TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(root / "model")
    build_store(TwinBert.load(model, device="cpu"), docs, root / "store", progress=False)
    return root


QUERIES = {"q1": Query("q1", "vitamin d deficiency and bone density"),
           "q2": Query("q2", "gene expression in cancer cells")}


def pipeline(root, retriever: str, fusion: FusionConfig, reranker: str | None = "twinbert", index: bool = True):
    from ranker.rerank.assembly import DenseConfig, PipelineConfig, build_pipeline
    from ranker.rerank.registry import RerankerConfig

    student = RerankerConfig(model=str(root / "model"), store=str(root / "store"), query_backend="torch")
    return build_pipeline(QUERIES, PipelineConfig(
        retriever=retriever, reranker=reranker, k=20, index=root / "index" if index else None, fusion=fusion,
        reranker_config=student if reranker else RerankerConfig(query_backend="torch"),
        dense=DenseConfig(store=str(root / "store"), model=str(root / "model")) if retriever != "bm25" else
        DenseConfig()))


@pytest.mark.java
def test_every_first_stage_gets_the_student_fused_with_bm25_by_default(small_collection):
    root = small_collection
    hybrid = pipeline(root, "hybrid", FusionConfig(), reranker=None).run()
    # after a hybrid over the same student and weight, the candidates' scores already are the fusion: kept
    again = pipeline(root, "hybrid", FusionConfig())
    assert again.reranker.config()["bm25_scores"] == "hybrid first stage" and again.run() == hybrid
    # another weight: BM25's scores of every candidate come from the index, fused by the one rule
    other = pipeline(root, "hybrid", FusionConfig(weight=0.2))
    config = other.reranker.config()
    assert config["bm25_scores"] == "index" and config["student_weight"] == 0.2
    candidates = pipeline(root, "hybrid", FusionConfig(), reranker=None).run()
    student = pipeline(root, "hybrid", FusionConfig("none")).reranker(QUERIES, candidates)
    bm25 = {q: [ScoredDoc(q, d, s) for d, s in other.reranker.lexical.index.score_docs(
        QUERIES[q].text, [x.docno for x in docs]).items()] for q, docs in candidates.items()}
    assert other.run() == sort_ranking(interpolate(bm25, student, 0.2))
    # after BM25, the candidates' own scores; --fusion none, the student alone
    assert pipeline(root, "bm25", FusionConfig()).reranker.config()["bm25_scores"] == "first-stage"
    assert pipeline(root, "bm25", FusionConfig("none")).reranker.config()["stage"] == "twinbert"
    with pytest.raises(RankerError, match="needs the BM25 index: give --index"):
        pipeline(root, "dense", FusionConfig(), index=False)
