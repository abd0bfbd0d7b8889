"""No ``rank`` sub-command, given bad input, ranks wrongly in silence, destroys data or dies with a traceback.

Each case runs the real CLI in a subprocess and checks one ``rank: error:`` line on stderr, exit code 2, and
that nothing was written (or deleted). The classes are the second hardening round's (issue 20).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ranker.io import formats

from .conftest import FIXTURES, ROOT, assert_input_error, rank

SHIPPED = ROOT / "models"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Fixture files: topics, a run over the fixture collection, a tiny student and its store."""
    from ranker.io.sources import iter_docs
    from ranker.models.config import TwinBertConfig
    from ranker.models.twinbert import TwinBert
    from ranker.store.build import build_store

    root = tmp_path_factory.mktemp("bad-input")
    (root / "run.trec").write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d4 2 1.0 t\nq2 Q0 d2 1 3.0 t\nq2 Q0 d1 2 1.0 t\n")
    model = TwinBert(TwinBertConfig(num_layers=1, doc_max_length=32), device="cpu").save(root / "student")
    build_store(model=TwinBert.load(model, device="cpu"), docs=iter_docs(FIXTURES / "docs.jsonl"),
                path=root / "store", progress=False)
    return root


def damaged(source: Path, target: Path, remove: str | None = None, truncate: str | None = None) -> Path:
    """A copy of ``source`` with one file removed or cut in half."""
    shutil.copytree(source, target)
    if remove:
        (target / remove).unlink()
    if truncate:
        data = (target / truncate).read_bytes()
        (target / truncate).write_bytes(data[: len(data) // 2])
    return target


def rerank(work: Path, *options: object, output: Path | None = None):
    return rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", work / "run.trec", "--collection",
                FIXTURES / "docs.jsonl", *options, "--output", output or work / "out" / "never.trec", check=False)


@pytest.mark.slow
def test_a_model_without_its_tokenizer_is_refused_not_run_on_unknown_tokens(work, tmp_path):
    student = damaged(work / "student", tmp_path / "student", remove="doc_encoder/tokenizer.json")
    assert_input_error(rank("encode", "--model", student, "--collection", FIXTURES / "docs.jsonl", "--store",
                            tmp_path / "s", check=False), "vocabulary is missing")
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()
    teacher = tmp_path / "teacher"
    shutil.copytree(SHIPPED / "teacher", teacher, ignore=shutil.ignore_patterns("tokenizer.json"))
    assert_input_error(rerank(work, "--model", teacher), "vocabulary is missing")


def test_the_store_fingerprint_covers_the_tokenizer(work, tmp_path):
    """A store encoded through one tokenizer is refused by a model with another (same weights)."""
    from ranker.models.twinbert import TwinBert

    other = damaged(work / "student", tmp_path / "student")
    file = other / "doc_encoder" / "tokenizer.json"
    settings = json.loads(file.read_text())
    vocab = settings["model"]["vocab"]
    vocab["the"], vocab["a"] = vocab["a"], vocab["the"]  # same size, same weights, other ids for two words
    file.write_text(json.dumps(settings))
    assert TwinBert.load(other, device="cpu").fingerprint() != TwinBert.load(work / "student").fingerprint()
    assert_input_error(rerank(work, "--reranker", "twinbert", "--model", other, "--store", work / "store"),
                       "fingerprint")


def test_rank_index_never_deletes_a_folder_that_is_not_its_index(tmp_path):
    precious = tmp_path / "collection"
    precious.mkdir()
    (precious / "corpus.jsonl").write_text((FIXTURES / "docs.jsonl").read_text())
    result = rank("index", "--collection", precious / "corpus.jsonl", "--index", precious, check=False)
    assert_input_error(result, "is not an index built by 'rank index'")
    assert (precious / "corpus.jsonl").read_text() == (FIXTURES / "docs.jsonl").read_text()


def test_a_null_query_text_is_an_error_not_the_query_none(work, tmp_path):
    topics = tmp_path / "queries.jsonl"
    topics.write_text('{"_id": "q1", "text": "cheap reranking"}\n{"_id": "q2", "text": null}\n')
    result = rank("run", "--topics", topics, "--candidates", work / "run.trec", "--output", tmp_path / "r.trec",
                  check=False)
    assert_input_error(result, "queries.jsonl:2", "text must be a string")


@pytest.mark.parametrize("options, fragment", [
    (["--rel-level", "0"], "rel_level (--rel-level) must be at least 1"),
    (["--rel-level", "-5"], "rel_level (--rel-level) must be at least 1"),
    (["--measures", "P@0"], "cutoff must be a whole number of at least 1"),
    (["--measures", "nDCG@0 RR@10"], "cutoff must be a whole number of at least 1"),
])
def test_measure_options_are_validated(work, options, fragment):
    result = rank("evaluate", "--qrels", FIXTURES / "qrels.txt", work / "run.trec", *options, check=False)
    assert_input_error(result, fragment)


def test_outputs_are_checked_before_any_work(work, tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert_input_error(rerank(work, "--reranker", "biencoder", output=folder), "is a folder, not a file")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert_input_error(rerank(work, output=blocker / "run.trec"), "is not a folder")
    result = rank("evaluate", "--qrels", FIXTURES / "qrels.txt", work / "run.trec", "--per-query", folder,
                  check=False)
    assert_input_error(result, "is a folder")
    assert_input_error(rank("encode", "--model", work / "student", "--collection", FIXTURES / "docs.jsonl",
                            "--store", blocker, check=False), "is a file, not a folder")


@pytest.mark.parametrize("inside", ["store/ranker.json", "store/new.trec", "index/segments_1"])
def test_an_output_inside_a_store_or_index_is_refused_and_leaves_it_whole(work, tmp_path, inside):
    """``--output S/ranker.json`` would replace the store's commit record, ``X/segments_1`` Lucene's: any file
    inside an artifact's folder is refused before any work."""
    index = tmp_path / "index"
    index.mkdir()
    (index / "segments_1").write_bytes(b"lucene")
    folders = {"store": work / "store", "index": index}
    target = folders[inside.split("/")[0]] / inside.split("/")[1]
    before = {p: p.read_bytes() for folder in folders.values() for p in folder.iterdir() if p.is_file()}
    assert_input_error(rerank(work, "--reranker", "twinbert", "--model", work / "student", "--store",
                              work / "store", output=target), "the folder of a store, an index or a model")
    assert_input_error(rank("evaluate", "--qrels", FIXTURES / "qrels.txt", work / "run.trec", "--per-query", target,
                            check=False), "the folder of a store, an index or a model")
    assert {p: p.read_bytes() for folder in folders.values() for p in folder.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("artifact, case, fragment", [
    ("student", dict(remove="head.safetensors"), "cannot load the model"),
    ("student", dict(remove="doc_encoder/model.safetensors"), "cannot load the model"),
    ("student", dict(truncate="doc_encoder/model.safetensors"), "cannot load the model"),
    ("student", dict(truncate="ranker.json"), "unreadable metadata"),
    ("store", dict(truncate="embeddings.npy"), "a damaged embedding store"),
    ("store", dict(remove="embeddings.npy"), "a damaged embedding store"),
    ("store", dict(remove="docnos.txt"), "a damaged embedding store"),
    ("store", dict(truncate="ranker.json"), "unreadable metadata"),
])
def test_a_damaged_model_or_store_is_one_line(work, tmp_path, artifact, case, fragment):
    parts = {"student": work / "student", "store": work / "store"}
    parts[artifact] = damaged(parts[artifact], tmp_path / artifact, **case)
    assert_input_error(rerank(work, "--reranker", "twinbert", "--model", parts["student"], "--store",
                              parts["store"]), fragment)


def test_fusing_runs_over_other_candidates_names_them(work, tmp_path):
    other = tmp_path / "other.trec"
    other.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq2 Q0 d2 1 3.0 t\nq2 Q0 d1 2 1.0 t\n")
    spec = tmp_path / "ens.json"
    spec.write_text(json.dumps({"type": "ensemble", "components": [{"reranker": "identity"}] * 2,
                                "weights": [0.5, 0.5]}))
    result = rank("fuse", "--ensemble", spec, "--output", tmp_path / "f.trec", work / "run.trec", other,
                  check=False)
    assert_input_error(result, "other.trec does not score the candidates", "query 'q1' lacks 1 of them (d4")
    assert not (tmp_path / "f.trec").exists()


@pytest.mark.slow
def test_a_store_miss_names_the_option_that_encodes_it(work, tmp_path):
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d9 2 1.0 t\n")
    result = rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", run, "--reranker", "twinbert",
                  "--model", work / "student", "--store", work / "store", "--output", tmp_path / "o.trec",
                  check=False)
    assert_input_error(result, "d9", "--encode-missing")


@pytest.mark.slow
@pytest.mark.java
def test_candidates_with_an_index_must_be_in_it(work, tmp_path):
    index = tmp_path / "index"
    rank("index", "--collection", FIXTURES / "docs.jsonl", "--index", index)
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d9 2 1.0 t\n")
    result = rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", run, "--index", index,
                  "--reranker", "identity", "--output", tmp_path / "o.trec", check=False)
    assert_input_error(result, "1 candidate(s) are not in the index", "d9")
    assert rank("index", "--collection", FIXTURES / "docs.jsonl", "--index", index).returncode == 0  # its own


def test_evaluating_a_run_against_other_queries_warns(work, tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("x1 0 d1 1\n")
    result = rank("evaluate", "--qrels", qrels, work / "run.trec")
    assert "rank: warning:" in result.stderr and "shares no query" in result.stderr


def test_a_failed_encode_says_where_its_rows_are_kept(work, tmp_path):
    collection = tmp_path / "docs.tsv"
    collection.write_text("".join(f"p{i}\tpassage number {i}\n" for i in range(70)) + "no tab here\n")
    result = rank("encode", "--model", work / "student", "--collection", collection, "--store", tmp_path / "s",
                  "--batch-size", 8, check=False)
    assert_input_error(result, "docs.tsv:71", "kept in", "s.partial", "resume")
    assert not (tmp_path / "s").exists()


def test_a_small_encode_commits_its_rows_while_it_runs(work, tmp_path, monkeypatch):
    """Rows commit every COMMIT_SECONDS, not only every chunk_size rows: a stopped small encode resumes."""
    from ranker.errors import RankerError
    from ranker.models.twinbert import TwinBert
    from ranker.store import build as stores

    monkeypatch.setattr(stores, "COMMIT_SECONDS", 0.0)
    model = TwinBert.load(work / "student", device="cpu")

    def docs():
        for i in range(40):
            yield f"p{i}", f"passage {i}"
        raise RankerError("stopped")

    with pytest.raises(RankerError, match="the 40 rows encoded before are kept"):
        stores.build_store(model, docs(), tmp_path / "s", batch_size=8, chunk_size=4096, progress=False)
    resumed = stores.build_store(model, [(f"p{i}", f"passage {i}") for i in range(50)], tmp_path / "s",
                                 batch_size=8, progress=False)
    whole = stores.build_store(model, [(f"p{i}", f"passage {i}") for i in range(50)], tmp_path / "w",
                               batch_size=8, progress=False)
    assert np.array_equal(resumed.embeddings, whole.embeddings) and resumed.docnos == whole.docnos


@pytest.mark.parametrize("command, option, value", [
    ("distill", "--temperature", "nan"), ("distill", "--temperature", "0"), ("distill", "--lr", "nan"),
    ("distill", "--cos-scale", "nan"), ("distill", "--max-minutes", "-1"), ("distill", "--label-weight", "nan"),
    ("align", "--lr", "-0.1"), ("train-teacher", "--head-lr", "inf"), ("train-teacher", "--segment-bias", "nan"),
])
def test_a_training_hyperparameter_that_cannot_train_is_refused_before_any_work(command, option, value, tmp_path):
    """NaN, 0 or a negative number would train to a NaN loss, exit 0 and write an untrained model."""
    result = rank(command, "--output", tmp_path / "run", option, value, check=False)
    assert_input_error(result, option, "finite number")
    assert not (tmp_path / "run").exists()


def test_a_subset_of_the_topics_runs_over_the_full_candidate_run(work, tmp_path):
    """``--queries N`` and ``--qids FILE`` rank part of the topics; the candidates may hold every topic's (only
    a query in no topic is an error), and the sidecar says how many of the topics ran."""
    first = tmp_path / "first.trec"
    rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", work / "run.trec", "--queries", 1,
         "--output", first)
    assert set(formats.read_run(first)) == {"q1"}
    assert json.loads((tmp_path / "first.trec.json").read_text())["queries"] == 1
    qids = tmp_path / "qids.txt"
    qids.write_text("q2\n")
    named = tmp_path / "named.trec"
    rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", work / "run.trec", "--qids", qids,
         "--output", named)
    assert set(formats.read_run(named)) == {"q2"}
    qids.write_text("q2\nq9\n")
    assert_input_error(rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", work / "run.trec",
                            "--qids", qids, "--output", tmp_path / "never.trec", check=False),
                       "qids.txt", "not among the topics", ": q9")
    assert not (tmp_path / "never.trec").exists()


def test_a_folder_given_as_a_file_and_a_missing_model_folder_are_named_as_such(tmp_path):
    from ranker.errors import MissingInputError
    from ranker.models.hf import resolve_checkpoint

    with pytest.raises(MissingInputError, match="is a folder, not a file"):
        formats.read_ids(tmp_path)
    with pytest.raises(MissingInputError, match="no such model folder"):
        resolve_checkpoint(tmp_path / "no-such-model")
    assert resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"


def test_a_teacher_run_for_an_unknown_collection_is_refused_not_taken_as_ms_marco(tmp_path):
    from ranker.errors import RankerError
    from ranker.train.scores import run_teacher_scores

    with pytest.raises(RankerError, match="--teacher-run marco=.*known: msmarco, scifact"):
        run_teacher_scores(tmp_path / "scores", {"marco": tmp_path / "run.trec"})
    assert not (tmp_path / "scores").exists()
