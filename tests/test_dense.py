"""Dense first stage: exact search is the brute-force cosine ranking, HNSW finds the same neighbours here, hybrid
fuses as documented, a res-crossing student is refused; and synthetic stores for the scale benchmark."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.errors import RankerError  # noqa: E402
from ranker.first_stage.dense import DenseRetriever  # noqa: E402
from ranker.fusion import interpolate  # noqa: E402
from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.store.build import build_store  # noqa: E402
from ranker.types import Query, ScoredDoc  # noqa: E402

QUERIES = {"q1": Query("q1", "vitamin d deficiency and bone density"),
           "q2": Query("q2", "gene expression in cancer cells")}


@pytest.fixture(scope="module")
def student(tmp_path_factory, data):
    from ranker.io.sources import iter_docs

    root = tmp_path_factory.mktemp("dense")
    torch.manual_seed(0)
    model = TwinBert.load(TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(root / "model"), device="cpu")
    docs = [(d.docno, d.contents) for _, d in zip(range(200), iter_docs(data / "beir-scifact" / "corpus.jsonl"))]
    store = build_store(model, docs, root / "store", progress=False)
    return model, store


def brute_force(model, store, k):
    q = model.encode_queries([q.text for q in QUERIES.values()]).numpy()
    d = store.lookup_rows(range(store.row_count))
    cos = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    return {qid: list(dict.fromkeys(store.docnos[r] for r in np.argsort(-cos[i], kind="stable")))[:k]
            for i, qid in enumerate(QUERIES)}  # a document at its best window (MaxP)


def test_exact_search_is_the_brute_force_cosine_ranking(student, monkeypatch):
    model, store = student
    from ranker.first_stage import dense

    monkeypatch.setattr(dense, "BLOCK_ROWS", 64)  # several blocks, each keeping its own top k
    got = DenseRetriever(store.path, str(model.path), k=20, query_backend="torch")(QUERIES)
    assert {q: [d.docno for d in docs] for q, docs in got.items()} == brute_force(model, store, 20)


def test_hnsw_finds_the_exact_neighbours_of_a_small_store(student):
    model, store = student
    exact = DenseRetriever(store.path, str(model.path), k=20, query_backend="torch")(QUERIES)
    approx = DenseRetriever(store.path, str(model.path), search="hnsw", k=20, query_backend="torch")(QUERIES)
    for qid in QUERIES:
        assert len({d.docno for d in approx[qid]} & {d.docno for d in exact[qid]}) >= 19


def test_hybrid_fuses_z_scores_over_the_union():
    bm25 = {"q": [ScoredDoc("q", "a", 3.0), ScoredDoc("q", "b", 1.0)]}
    dense = {"q": [ScoredDoc("q", "b", 0.9), ScoredDoc("q", "c", 0.1)]}
    fused = {d.docno: d.score for d in interpolate(bm25, dense, 0.5)["q"]}
    # each list's z-scores are +1 / -1; a document a list lacks gets that list's lowest (-1)
    assert fused == pytest.approx({"a": 0.5 * 1 + 0.5 * -1, "b": 0.5 * -1 + 0.5 * 1, "c": 0.5 * -1 + 0.5 * -1},
                                  abs=1e-6)


def test_hybrid_over_an_index_and_a_store_of_different_collections_is_refused(student):
    """BM25 hits none of which the store holds: two collections, whose fusion would interleave unrelated lists."""
    from ranker.first_stage.dense import HybridRetriever
    from ranker.pipeline import Stage

    class OtherCollection(Stage):
        name = "bm25"

        def transform(self, queries, candidates=None):
            return {q: [ScoredDoc(q, "msmarco-7", 2.0), ScoredDoc(q, "msmarco-9", 1.0)] for q in queries}

    model, store = student
    dense = DenseRetriever(store.path, str(model.path), k=5, query_backend="torch")
    with pytest.raises(RankerError, match="different collections"):
        HybridRetriever(OtherCollection(), dense, 0.5, k=5)(QUERIES)
    ours = {q: [ScoredDoc(q, store.docnos[0], 1.0)] for q in QUERIES}
    same = type("Same", (OtherCollection,), {"transform": lambda self, queries, candidates=None: ours})
    assert set(HybridRetriever(same(), dense, 0.5, k=5)(QUERIES)) == set(QUERIES)


def test_a_res_crossing_student_is_refused(student, tmp_path):
    model, store = student
    res = TwinBert(TwinBertConfig(num_layers=1, crossing="res"), device="cpu").save(tmp_path / "res")
    with pytest.raises(RankerError, match="cos crossing"):
        DenseRetriever(store.path, str(res))
    with pytest.raises(RankerError, match="dense search"):
        DenseRetriever(store.path, str(model.path), search="ivf")


def test_synthetic_stores_share_rows_and_are_measured(tmp_path):
    from ranker.eval.scale import docno, measure, synthetic_store

    small = synthetic_store(tmp_path / "small", 1000, dim=16)
    large = synthetic_store(tmp_path / "large", 70_000, dim=16)  # over one chunk
    assert len(large) == 70_000 and large.docnos[69_999] == docno(69_999)
    assert np.array_equal(small.lookup([docno(5)]), large.lookup([docno(5)]))  # the same rows, whatever the size
    result = measure(tmp_path / "large", candidates=10, queries=20)
    assert result["rows"] == 70_000 and result["lookup_p50_ms"] > 0 and result["anonymous_mb_added"] < 100


def test_an_empty_store_is_refused_for_exact_and_hnsw_search(student, tmp_path):
    model, _ = student
    empty = build_store(model, [], tmp_path / "empty", progress=False)
    assert empty.row_count == 0
    for search in ("exact", "hnsw"):
        with pytest.raises(RankerError, match="holds no live passages: nothing to retrieve"):
            DenseRetriever(empty.path, str(model.path), search=search, query_backend="torch")
    from ranker.store.edit import delete_from_store

    emptied = build_store(model, [("d1", "vitamin d"), ("d2", "gene expression")], tmp_path / "emptied",
                          progress=False)
    delete_from_store(emptied.path, ["d1", "d2"])  # rows, all of them deleted: not an empty run with exit 0
    with pytest.raises(RankerError, match="holds no live passages"):
        DenseRetriever(emptied.path, str(model.path), query_backend="torch")


def test_contradictory_first_stage_options_are_refused(tmp_path):
    from ranker.rerank.assembly import DenseConfig, PipelineConfig, build_pipeline

    run = tmp_path / "c.trec"
    run.write_text("q1 Q0 d1 1 1.0 t\n")
    with pytest.raises(RankerError, match="--retriever dense retrieves and --candidates reranks"):
        build_pipeline(QUERIES, PipelineConfig(retriever="dense", candidates=run, dense=DenseConfig(store="s")))
    with pytest.raises(RankerError, match="set the dense or hybrid retriever"):
        build_pipeline(QUERIES, PipelineConfig(candidates=run, dense=DenseConfig(hybrid_weight=0.3)))


def test_dense_retrieval_then_the_student_opens_the_student_once(student):
    """``--retriever dense --reranker twinbert`` over one store: both stages score with one loaded student (one
    model, one store, one query encoder), and the reranking equals the student's over the same candidates."""
    from ranker.rerank.assembly import DenseConfig, PipelineConfig, build_pipeline
    from ranker.rerank.fused import FusionConfig
    from ranker.rerank.registry import RerankerConfig
    from ranker.rerank.twinbert import TwinBertReranker

    model, store = student
    settings = RerankerConfig(model=str(model.path), store=str(store.path), query_backend="torch")
    pipeline = build_pipeline(QUERIES, PipelineConfig(
        retriever="dense", reranker="twinbert", k=10, reranker_config=settings, fusion=FusionConfig("none"),
        dense=DenseConfig(store=str(store.path), model=str(model.path))))
    dense = pipeline.stage.first
    assert pipeline.reranker.student is dense.student
    ranking = pipeline.run()
    alone = TwinBertReranker(str(model.path), store.path, query_backend="torch")(QUERIES, dense(QUERIES))
    assert ranking == {qid: docs[:10] for qid, docs in alone.items()}
