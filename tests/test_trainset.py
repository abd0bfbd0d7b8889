from __future__ import annotations

from ranker.io.formats import read_qrels
from ranker.train.examples import build_trainset


def test_scifact_train_examples_are_prefixed_and_never_test_queries(data):
    trainset = build_trainset(data, sets=("scifact-train",))
    test = {f"scifact:{q.qid}" for q in read_qrels(data / "beir-scifact" / "qrels" / "test.tsv")}
    assert len(trainset.examples) + len(trainset.validation.queries) == 809
    assert not test & {ex.qid for ex in trainset.examples}
    example = next(ex for ex in trainset.examples if ex.qid == "scifact:0")
    assert example.positives == {"scifact:31715818": 2}
    assert len(example.negatives) == 100 and "scifact:31715818" not in example.negatives  # BM25 missed it
    assert all(trainset.texts[d] for d in [*example.positives, *example.negatives])
    held = set(trainset.validation.queries)
    assert len(held) == 50 and all(q.startswith("scifact:") for q in held)
    assert not held & {ex.qid for ex in trainset.examples}  # held out entirely


def test_validation_scores_per_collection_and_written_with_own_ids(data, tmp_path):
    from ranker.io.formats import read_run, read_topics

    validation = build_trainset(data, sets=("dl20", "scifact-train"), scifact_val=10).validation
    scores = validation.scores(validation.candidates)  # BM25 order
    assert set(scores) == {"msmarco", "scifact"} and all(0 < v < 1 for v in scores.values())
    validation.write(tmp_path)
    topics = read_topics(tmp_path / "scifact.topics.tsv")
    assert len(topics) == 10 and not any(q.startswith("scifact:") for q in topics)
    run = read_run(tmp_path / "scifact.bm25.trec")
    assert all(not d.docno.startswith("scifact:") for docs in run.values() for d in docs)
    assert len(read_topics(tmp_path / "msmarco.topics.tsv")) == round(0.25 * 54)
