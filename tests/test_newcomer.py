"""The README's five minutes on your own collection, run as a newcomer runs them: from a folder outside the clone
(no ./models there, no $RANKER_MODELS), on a small collection of their own — index, encode, run BM25 and BM25 >>
student, evaluate, serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from ranker.io.formats import read_qrels, read_run
from ranker.io.sources import iter_docs
from ranker.serve.loadtest import ServerProcess

pytestmark = pytest.mark.slow


def newcomer(folder, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RANKER_MODELS"}
    result = subprocess.run([sys.executable, "-m", "ranker", *map(str, args)], cwd=folder, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"rank {' '.join(map(str, args))}: {result.stderr[-2000:]}"
    return result


def test_the_five_minute_path_works_from_any_folder(data, tmp_path):
    """Eight judged SciFact claims and 300 abstracts (their relevant ones among them) as the user's own files."""
    scifact = data / "beir-scifact"
    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    claims = sorted({q.qid for q in qrels})[:8]
    relevant = {q.docno for q in qrels if q.qid in claims}
    home = tmp_path / "home"
    (home / "my").mkdir(parents=True)
    with (home / "my" / "passages.tsv").open("w") as out:
        for i, doc in enumerate(iter_docs(scifact / "corpus.jsonl")):
            if doc.docno in relevant or i < 300:
                out.write(f"{doc.docno}\t{' '.join(doc.contents.split())}\n")
    topics = {json.loads(line)["_id"]: json.loads(line)["text"] for line in open(scifact / "queries.jsonl")}
    (home / "my" / "topics.tsv").write_text("".join(f"{q}\t{topics[q]}\n" for q in claims))
    (home / "my" / "qrels.txt").write_text("".join(f"{q.qid} 0 {q.docno} {q.relevance}\n" for q in qrels
                                                   if q.qid in claims))
    assert not (home / "models").exists()

    newcomer(home, "index", "--collection", "my/passages.tsv", "--index", "work/indexes/mine")
    newcomer(home, "encode", "--collection", "my/passages.tsv", "--store", "work/stores/mine")
    newcomer(home, "run", "--topics", "my/topics.tsv", "--index", "work/indexes/mine", "--k", 100,
             "--output", "runs/bm25.mine.trec")
    newcomer(home, "run", "--topics", "my/topics.tsv", "--index", "work/indexes/mine", "--k", 100,
             "--reranker", "twinbert", "--store", "work/stores/mine", "--output", "runs/twinbert.mine.trec")
    bm25, student = read_run(home / "runs" / "bm25.mine.trec"), read_run(home / "runs" / "twinbert.mine.trec")
    assert set(student) == set(claims) and all(set(d.docno for d in student[q]) == set(d.docno for d in bm25[q])
                                                for q in claims)
    sidecar = json.loads((home / "runs" / "twinbert.mine.trec.json").read_text())
    fused = sidecar["pipeline"]["stages"][1]["stages"][0]  # README's default: the student fused with BM25
    assert fused["stage"] == "fusion" and fused["stages"][0]["stage"] == "twinbert"
    table = newcomer(home, "evaluate", "--qrels", "my/qrels.txt", "--baseline", "runs/bm25.mine.trec",
                     "runs/bm25.mine.trec", "runs/twinbert.mine.trec", "--measures", "nDCG@10 RR@10 R@100").stdout
    assert "twinbert.mine" in table and "nDCG@10" in table

    env_models = os.environ.pop("RANKER_MODELS", None)
    try:
        with ServerProcess("--store", "work/stores/mine", "--index", "work/indexes/mine", cwd=home) as server:
            with urllib.request.urlopen(f"{server.url}/search?q={urllib.request.quote(topics[claims[0]])}&k=5",
                                        timeout=60) as response:
                hits = json.loads(response.read())["hits"]
    finally:
        if env_models is not None:
            os.environ["RANKER_MODELS"] = env_models
    assert len(hits) == 5 and hits[0]["docno"] == student[claims[0]][0].docno


def test_shipped_models_are_found_by_name_from_any_folder(tmp_path):
    """``rank models list`` prints ``--model models/twinbert``; a user also types ``--model twinbert-v2`` or
    ``model="ensemble-msmarco.json"``: each resolves to the shipped model from a folder that has no ``models/``."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "passages.tsv").write_text("d1\tvitamin d and bone density\nd2\tgene expression in cancer cells\n"
                                       "d3\tprotein folding in the cell\n")
    (home / "topics.tsv").write_text("q1\tvitamin d bones\n")
    (home / "candidates.trec").write_text("".join(f"q1 Q0 d{i} {i} {4 - i} bm25\n" for i in (1, 2, 3)))
    for model in ("twinbert-v2", "models/twinbert"):
        newcomer(home, "encode", "--model", model, "--collection", "passages.tsv", "--store", f"stores/{model}")
    newcomer(home, "run", "--topics", "topics.tsv", "--candidates", "candidates.trec", "--collection", "passages.tsv",
             "--reranker", "ensemble", "--model", "ensemble-msmarco.json", "--output", "runs/ensemble.trec")
    assert set(d.docno for d in read_run(home / "runs" / "ensemble.trec")["q1"]) == {"d1", "d2", "d3"}
    script = ("from ranker import RerankerConfig, load, make_reranker\n"
              "print(type(make_reranker('ensemble', RerankerConfig(model='ensemble-msmarco.json', texts={}))).__name__,"
              " type(load('twinbert-v2')).__name__)")
    env = {k: v for k, v in os.environ.items() if k != "RANKER_MODELS"}
    printed = subprocess.run([sys.executable, "-c", script], cwd=home, env=env, capture_output=True, text=True)
    assert printed.stdout.split() == ["EnsembleReranker", "TwinBert"], printed.stderr[-2000:]
