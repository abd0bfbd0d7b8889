"""Every registered reranker keeps the one contract of a stage (PyTerrier's ``TransformerTestCase``, here over
:data:`ranker.rerank.registry.RERANKERS`): the same documents out as in, only the queries given, best first by the
one tie rule, ``{}`` for ``{}``, a JSON-serialisable config, and the same ranking twice."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.io.sources import iter_docs  # noqa: E402
from ranker.rerank.registry import RERANKERS, RerankerConfig, make_reranker  # noqa: E402
from ranker.types import Query, ScoredDoc, sort_docs  # noqa: E402

from .conftest import FIXTURES, ROOT  # noqa: E402

QUERIES = {"q1": Query("q1", "cheap neural reranking"), "q2": Query("q2", "lucene inverted index")}


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> dict:
    """The fixture collection's text, a tiny student and its store, MiniLM's store, an ensemble file."""
    from ranker.io.artifact import write_metadata
    from ranker.models.biencoder import BiEncoder
    from ranker.models.config import TwinBertConfig
    from ranker.models.twinbert import TwinBert
    from ranker.store.build import build_store

    root = tmp_path_factory.mktemp("conformance")
    docs = list(iter_docs(FIXTURES / "docs.jsonl"))
    torch.manual_seed(0)
    student = TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(root / "student")
    build_store(TwinBert.load(student, device="cpu"), docs, root / "student-store", progress=False)
    build_store(BiEncoder("minilm", device="cpu", progress=False), docs, root / "minilm-store", progress=False)
    write_metadata(root / "ensemble.json", "ensemble", components=[{"reranker": "identity"}, {"reranker": "biencoder"}],
                   weights=[0.4, 0.6])
    # three candidates a query, two of them tied on the first stage's score: the tie rule decides their order
    candidates = {q: [ScoredDoc(q, d.docno, float(i % 2)) for i, d in enumerate(docs[:3])] for q in QUERIES}
    return {"root": root, "texts": {d.docno: d.contents for d in docs}, "student": student,
            "candidates": candidates}


def configured(name: str, parts: dict) -> RerankerConfig:
    root, texts = parts["root"], parts["texts"]
    return {"identity": RerankerConfig(),
            "cross-encoder": RerankerConfig(model=str(ROOT / "models" / "teacher"), texts=texts),
            "biencoder": RerankerConfig(texts=texts),
            "twinbert": RerankerConfig(model=str(parts["student"]), store=str(root / "student-store"),
                                       query_backend="torch"),
            "ensemble": RerankerConfig(model=str(root / "ensemble.json"), texts=texts),
            "sentence-transformers": RerankerConfig(model="minilm", store=str(root / "minilm-store"))}[name]


def same(a: list[ScoredDoc], b: list[ScoredDoc]) -> bool:
    """The same documents in the same order, scores equal up to float noise (a batch's padding)."""
    return [d.docno for d in a] == [d.docno for d in b] and [d.score for d in a] == pytest.approx(
        [d.score for d in b], rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", list(RERANKERS))
def test_every_registered_reranker_keeps_the_stage_contract(name, parts):
    reranker = make_reranker(name, configured(name, parts))
    candidates = parts["candidates"]
    ranking = reranker(QUERIES, candidates)
    assert set(ranking) == set(QUERIES)
    for qid, docs in ranking.items():
        assert sorted(d.docno for d in docs) == sorted(d.docno for d in candidates[qid])  # the same documents
        assert all(d.qid == qid for d in docs) and docs == sort_docs(docs)  # best first, ties by the one rule
    only = reranker({"q1": QUERIES["q1"]}, candidates)  # candidates of a query not asked for are left out
    assert set(only) == {"q1"} and same(only["q1"], ranking["q1"])
    assert reranker({}, {}) == {} and reranker(QUERIES, {}) == {}
    again = reranker(QUERIES, candidates)  # deterministic
    assert set(again) == set(ranking) and all(same(again[q], ranking[q]) for q in ranking)
    json.dumps(reranker.config())
