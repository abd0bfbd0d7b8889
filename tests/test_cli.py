"""The ``rank`` command end to end, in subprocesses, as a user runs it."""

from __future__ import annotations

import json

import pytest

from .conftest import FIXTURES, assert_input_error, rank


@pytest.mark.java
def test_index_run_evaluate_on_fixture(tmp_path):
    index = tmp_path / "index"
    assert "indexed 4 documents" in rank("index", "--collection", FIXTURES / "docs.jsonl", "--index", index).stdout
    out = tmp_path / "runs" / "bm25.trec"
    done = rank("run", "--topics", FIXTURES / "topics.tsv", "--index", index, "--k", 3, "--output", out)
    assert "ms/query" in done.stdout
    assert "WARNING" not in done.stderr, done.stderr  # the JVM's and Lucene's start-up warnings stay off the output
    lines = out.read_text().splitlines()
    assert lines[0].split()[:4] == ["q1", "Q0", "d1", "1"] and lines[0].endswith(" bm25")
    meta = json.loads((tmp_path / "runs" / "bm25.trec.json").read_text())
    assert meta["pipeline"]["k1"] == 0.9 and meta["pipeline"]["b"] == 0.4 and meta["k"] == 3
    assert meta["timing"]["queries"] == 3 and meta["timing"]["ms_per_query"] > 0
    assert meta["ranker_version"] and meta["topics"].endswith("topics.tsv")
    table = json.loads(rank("evaluate", "--qrels", FIXTURES / "qrels.txt", out, "--format", "json").stdout)
    assert table["systems"]["bm25"]["RR@10"] == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.java
def test_scifact_bm25_through_the_cli(data, scifact_index, tmp_path):
    scifact = data / "beir-scifact"
    out = tmp_path / "bm25.scifact.trec"
    rank("run", "--topics", scifact / "queries.jsonl", "--judged-only", scifact / "qrels" / "test.tsv",
         "--index", scifact_index, "--k", 100, "--remove-query-id", "--output", out)
    table = json.loads(rank("evaluate", "--qrels", scifact / "qrels" / "test.tsv", out, "--format", "json").stdout)
    assert round(table["systems"]["bm25.scifact"]["nDCG@10"], 4) == 0.6789
    assert round(table["systems"]["bm25.scifact"]["R@100"], 4) == 0.9253
    again = tmp_path / "again" / "bm25.scifact.trec"
    rank("run", "--topics", scifact / "queries.jsonl", "--judged-only", scifact / "qrels" / "test.tsv",
         "--index", scifact_index, "--k", 100, "--remove-query-id", "--output", again)
    assert again.read_bytes() == out.read_bytes()  # same inputs, same bytes (ties ordered by docno)


def test_evaluate_dl19_table_with_baseline(data, tmp_path):
    runs = data / "msmarco-passage" / "runs"
    per_query = tmp_path / "per-query.csv"
    result = rank("evaluate", "--qrels", data / "msmarco-passage" / "qrels" / "dl19.txt",
                  runs / "splade-pp-ed.dl19.top100.trec", "--baseline", runs / "bm25.dl19.top100.trec",
                  "--per-query", per_query)
    bm25_row = next(line for line in result.stdout.splitlines() if "bm25.dl19.top100 (baseline)" in line)
    assert "0.5058" in bm25_row
    splade_row = next(line for line in result.stdout.splitlines() if line.strip().startswith("splade"))
    assert "0.7308†" in splade_row
    assert per_query.read_text().splitlines()[0] == "system,qid,nDCG@10,RR@10,R@100"
    csv = rank("evaluate", "--qrels", data / "msmarco-passage" / "qrels" / "dl19.txt",
               runs / "bm25.dl19.top100.trec", "--measures", "nDCG@10 AP@100", "--format", "csv").stdout
    assert csv.splitlines()[0] == "system,queries,nDCG@10,AP@100"


def test_topics_line_without_tab(tmp_path):
    topics = tmp_path / "topics.tsv"
    topics.write_text("1\tfine\n2 no tab\n")
    out = tmp_path / "out.trec"
    result = rank("run", "--topics", topics, "--index", tmp_path, "--output", out, check=False)
    assert_input_error(result, f"{topics}:2:", "no tab")
    assert not out.exists()


def test_qrels_line_with_three_columns(tmp_path):
    qrels = tmp_path / "qrels.txt"
    qrels.write_text("1 0 d1 1\n1 0 d2\n")
    run = tmp_path / "run.trec"
    run.write_text("1 Q0 d1 1 1.0 t\n")
    per_query = tmp_path / "per-query.csv"
    result = rank("evaluate", "--qrels", qrels, run, "--per-query", per_query, check=False)
    assert_input_error(result, f"{qrels}:2:", "expected 4 columns")
    assert not per_query.exists()


def test_missing_index_folder(tmp_path):
    out = tmp_path / "out.trec"
    result = rank("run", "--topics", FIXTURES / "topics.tsv", "--index", tmp_path / "absent", "--output", out,
                  check=False)
    assert_input_error(result, str(tmp_path / "absent"), "no such index folder")
    assert not out.exists()


def test_candidates_name_a_query_absent_from_topics(tmp_path):
    candidates = tmp_path / "cands.trec"
    candidates.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nzz Q0 d1 1 1.0 t\n")
    out = tmp_path / "out.trec"
    result = rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", candidates, "--output", out,
                  check=False)
    assert_input_error(result, f"{candidates}:3:", "'zz' is not in the topics")
    assert not out.exists() and not (tmp_path / "out.trec.json").exists()


def test_rerank_candidates_with_identity_cuts_to_k(tmp_path):
    candidates = tmp_path / "cands.trec"
    candidates.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\nq2 Q0 d1 1 1.0 t\n")
    out = tmp_path / "out.trec"
    rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", candidates, "--k", 1, "--output", out)
    assert out.read_text().splitlines() == ["q1 Q0 d1 1 2.0 out", "q2 Q0 d1 1 1.0 out"]
    meta = json.loads((tmp_path / "out.trec.json").read_text())
    assert meta["candidates"] == str(candidates) and meta["queries"] == 2


def test_unknown_reranker(tmp_path):
    candidates = tmp_path / "cands.trec"
    candidates.write_text("q1 Q0 d1 1 2.0 t\n")
    result = rank("run", "--topics", FIXTURES / "topics.tsv", "--candidates", candidates, "--reranker", "magic",
                  "--output", tmp_path / "out.trec", check=False)
    assert_input_error(result, "unknown reranker 'magic'", "identity")
