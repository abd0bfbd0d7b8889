from __future__ import annotations

import json

import pytest

from ranker.errors import MissingInputError, RankerError
from ranker.eval.evaluate import evaluate
from ranker.first_stage.bm25 import Bm25Config, Bm25Retriever, build_index
from ranker.io.artifact import META_FILE
from ranker.io.formats import read_qrels, read_topics
from ranker.io.sources import iter_docs
from ranker.measures import parse_measures
from ranker.types import Doc, Query

from .conftest import FIXTURES

pytestmark = pytest.mark.java


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    index = tmp_path_factory.mktemp("tiny") / "index"
    stats = build_index(iter_docs(FIXTURES / "docs.jsonl"), index, source="fixture")
    assert stats.documents == 4
    return index


def test_scifact_reproduces_pyserini_beir_flat(data, scifact_index):
    """Pyserini's published BEIR flat figures: nDCG@10 0.6789, R@100 0.9253 (k1 0.9, b 0.4, query id dropped)."""
    scifact = data / "beir-scifact"
    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    judged = {q.qid for q in qrels}
    queries = {qid: q for qid, q in read_topics(scifact / "queries.jsonl").items() if qid in judged}
    retriever = Bm25Retriever(scifact_index, Bm25Config(k=100, remove_query_id=True))
    ranking = retriever(queries)
    assert len(ranking) == 300 and max(len(docs) for docs in ranking.values()) == 100
    means = evaluate(qrels, {"bm25": ranking}, parse_measures(["nDCG@10", "R@100"])).means.loc["bm25"]
    assert round(means["nDCG@10"], 4) == 0.6789
    assert round(means["R@100"], 4) == 0.9253


def test_stored_text_and_metadata(tiny_index):
    retriever = Bm25Retriever(tiny_index)
    assert retriever.num_docs == 4
    assert retriever.text("d2") == "Lucene Lucene builds an inverted index; BM25 scores documents with it."
    with pytest.raises(RankerError, match="'nope' is not in the index"):
        retriever.text("nope")
    meta = json.loads((tiny_index / META_FILE).read_text())
    assert meta["documents"] == 4 and meta["source"] == "fixture"


def test_remove_query_id(tiny_index):
    queries = read_topics(FIXTURES / "topics.tsv")
    kept = Bm25Retriever(tiny_index, Bm25Config(k=2))(queries)
    dropped = Bm25Retriever(tiny_index, Bm25Config(k=2, remove_query_id=True))(queries)
    assert kept["d3"][0].docno == "d3"
    assert "d3" not in [d.docno for d in dropped["d3"]] and len(dropped["d3"]) <= 2
    assert kept["q1"][0].docno == "d1" and kept["q1"] == dropped["q1"]


def test_lucene_hits_come_best_first_with_positive_scores(tiny_index):
    """``search`` itself, not the stage (whose ``__call__`` sorts whatever it is given)."""
    ranking = Bm25Retriever(tiny_index, Bm25Config(k=10)).search(read_topics(FIXTURES / "topics.tsv"),
                                                                  progress=False)
    assert any(len(docs) > 1 for docs in ranking.values())
    for docs in ranking.values():
        assert [d.score for d in docs] == sorted((d.score for d in docs), reverse=True)
        assert all(d.score > 0 for d in docs) and len({d.docno for d in docs}) == len(docs)


def test_a_query_of_thousands_of_terms_is_searched_whole(tiny_index):
    """Lucene's default limit of 1,024 clauses made such a query fail inside the JVM."""
    long = " ".join(f"word{i}" for i in range(3000)) + " lucene"
    ranking = Bm25Retriever(tiny_index, Bm25Config(k=3))({"q": Query("q", long)})
    assert ranking["q"][0].docno == "d2"


def test_missing_or_invalid_index(tmp_path):
    with pytest.raises(MissingInputError, match="no such index folder"):
        Bm25Retriever(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match="not a Lucene index"):
        Bm25Retriever(tmp_path / "empty")


def test_failed_indexing_keeps_the_old_index(tiny_index, tmp_path):
    def broken():
        yield Doc("a", "fine")
        raise RankerError("collection broke half-way")

    target = tmp_path / "index"
    with pytest.raises(RankerError, match="half-way"):
        build_index(broken(), target)
    assert not target.exists() and [p.name for p in tmp_path.iterdir()] == [".index.lock"]  # the writer lock only


def test_a_document_with_no_text_is_left_out_and_counted(tmp_path):
    docs = [Doc("a", "hello world"), Doc("b", "  "), Doc("c", "second document")]
    stats = build_index(docs, tmp_path / "index")
    assert (stats.documents, stats.empty) == (2, 1)
    assert json.loads((tmp_path / "index" / META_FILE).read_text())["empty_documents"] == 1
    with pytest.raises(RankerError, match="'b' is not in the index"):
        Bm25Retriever(tmp_path / "index").text("b")
