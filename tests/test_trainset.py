from __future__ import annotations

from ranker.formats import read_qrels
from ranker.trainset import build_trainset


def test_scifact_train_examples_are_prefixed_and_never_test_queries(data):
    trainset = build_trainset(data / "msmarco-passage", sets=("scifact-train",))
    test = {f"scifact:{q.qid}" for q in read_qrels(data / "beir-scifact" / "qrels" / "test.tsv")}
    assert len(trainset.examples) == 809 and not test & {ex.qid for ex in trainset.examples}
    example = next(ex for ex in trainset.examples if ex.qid == "scifact:0")
    assert example.positives == {"scifact:31715818": 2}
    assert len(example.negatives) == 100 and "scifact:31715818" not in example.negatives  # BM25 missed it
    assert all(trainset.texts[d] for d in [*example.positives, *example.negatives])
    assert not trainset.validation.queries  # validation comes from DL20/DL21 only
