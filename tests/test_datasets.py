"""The dataset registry: each set declared once, read through its methods, never trained on where it is a test."""

from __future__ import annotations

import pytest

from ranker.errors import RankerError
from ranker.io import datasets
from ranker.io.datasets import POSITIVE_GRADE, Dataset, collection_of, register, strip_prefix
from ranker.io.formats import read_qrels
from ranker.train.config import DISTILL_SETS, SPARSE_SETS, TEACHER_SETS
from ranker.types import ScoredDoc


def test_the_registry_names_every_set_in_one_order():
    assert datasets.names() == ("dl19", "dl20", "dl21", "dl22", "dl23", "dev600", "msmarco-train", "scifact-train",
                                "scifact-test")
    assert datasets.names("align") == ("msmarco-train",)
    assert datasets.names("distill") == ("dl20", "dl21", "dl22", "dl23", "dev600", "msmarco-train", "scifact-train")
    assert datasets.names("test") == ("dl19", "scifact-test")
    assert TEACHER_SETS == ("dl20", "dl21", "dl23", "dev600", "scifact-train")
    assert DISTILL_SETS == ("dl20", "dl21", "dl22", "dl23", "dev600", "scifact-train")
    assert SPARSE_SETS == ("dev600",) and datasets.names("validation") == ("dl20", "dl21", "scifact-train")


def test_unknown_names_and_test_sets_are_refused_where_they_do_not_belong():
    with pytest.raises(RankerError, match="unknown dataset 'dl18'; known: dl19, dl20"):
        datasets.load("dl18")
    with pytest.raises(RankerError, match="unknown distill set 'dl19'; known: dl20, dl21, dl22"):
        datasets.load("dl19", use="distill")
    with pytest.raises(ValueError, match="registered already"):
        register(Dataset("dl19", "msmarco", "t", "p"))


def test_ids_keep_their_collection_through_the_prefix():
    assert collection_of("scifact:12") == "scifact" and collection_of("1037798") == "msmarco"
    assert strip_prefix("scifact:12") == "12" and strip_prefix("1037798") == "1037798"


def test_dev600_grades_map_to_the_dl_scale_and_the_official_positive_is_kept(data):
    dev = datasets.load("dev600", data)
    grades = {(q.qid, q.docno): q.relevance for q in dev.judgements()}
    assert set(grades.values()) <= {0, 1, 2, 3}
    for q in read_qrels(data / "msmarco-passage/dev600/qrels.official.txt"):
        assert grades[q.qid, q.docno] >= POSITIVE_GRADE  # always a positive, whatever the human grade said


def test_each_pool_kind_reads_what_it_declares(data, tmp_path):
    dl20 = datasets.load("dl20", data)
    pooled, bm25 = dl20.pool_candidates(), dl20.candidates()
    qid = next(iter(bm25))
    assert {d.docno for d in bm25[qid]} <= {d.docno for d in pooled[qid]}  # BM25 is one of the pooled runs
    assert all(d.score == 0.0 for d in pooled[qid]) and len(pooled[qid]) > len(bm25[qid])
    dl23 = datasets.load("dl23", data)
    assert dl23.candidates() == {} and sum(map(len, dl23.pool_candidates().values())) == len(dl23.judgements())
    (tmp_path / "bm25.scifact-train.trec").write_text("0 Q0 4983 1 9.0 t\n1 Q0 4983 1 9.0 t\n")
    scifact = datasets.load("scifact-train", data, runs_dir=tmp_path)
    assert list(scifact.pool_candidates()) == ["scifact:0"]  # query 1 is no train query
    assert "scifact:0" in scifact.queries() and len(scifact.query_ids()) == 809
    assert scifact.texts()["scifact:4983"].startswith("Microstructural")


def test_the_training_queries_have_no_labels_and_share_no_query_with_validation_or_test(data, tmp_path):
    train = datasets.load("msmarco-train", data, runs_dir=tmp_path, use="align")
    assert len(train.queries()) == 48_794 and train.qrels is None and train.candidates() == {}
    assert datasets.overlap("msmarco-train", data) == []
    dl19 = set(datasets.load("dl19", data).texts())
    texts = train.texts()  # the training sets' passages: every file but DL19's, so DL19-only passages are absent
    assert set(datasets.load("dl22", data).texts()) <= set(texts) and dl19 - set(texts)
    with pytest.raises(RankerError, match="bm25.msmarco-train.trec: no such file"):
        train.pool_candidates()  # distilling on it needs the BM25 run the user makes
    qid = next(iter(train.queries()))
    docno = next(iter(datasets.load("dl22", data).texts()))
    (tmp_path / "bm25.msmarco-train.trec").write_text(f"{qid} Q0 {docno} 1 7.5 bm25\nnope Q0 {docno} 1 7.5 bm25\n")
    from ranker.train.examples import distill_data

    pairs = distill_data(data, ("msmarco-train",), runs_dir=tmp_path)
    assert pairs.candidates == {qid: [ScoredDoc(qid, docno, 7.5)]} and pairs.source == {qid: "msmarco-train"}


def test_overlap_finds_a_held_out_query_by_id_and_by_normalised_text(data, tmp_path):
    (qid, _), (_, second) = list(datasets.load("dl19", data).queries().items())[:2]
    ms = tmp_path / "msmarco-passage"
    (ms / "train-queries").mkdir(parents=True)
    (ms / "train-queries" / "queries.tsv").write_text(
        f"{qid}\tnot the same text\n1\t  {second.text.upper()}?\n2\tan unseen query\n")
    (ms / "topics").mkdir()
    for name in ("dl19", "dl20", "dl21"):  # the MS MARCO validation and test topics
        (ms / "topics" / f"{name}.tsv").write_text((data / f"msmarco-passage/topics/{name}.tsv").read_text())
    assert datasets.overlap("msmarco-train", tmp_path) == [qid, "1"]
    assert datasets.normalised("  What IS  a (cat)?") == "what is a cat"
