"""TwinBERT serving through the CLI: encode a store, rerank from it, benchmark (a 1-layer model, real passages)."""

from __future__ import annotations

import json

import pytest

from ranker.io.formats import read_run

from .conftest import assert_input_error, rank


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data):
    from ranker.models.config import TwinBertConfig
    from ranker.models.twinbert import TwinBert

    root = tmp_path_factory.mktemp("student")
    model = TwinBert(TwinBertConfig(num_layers=1, doc_max_length=64)).save(root / "model")
    msmarco = data / "msmarco-passage"
    run = read_run(msmarco / "runs" / "bm25.dl19.top100.trec")
    qids = sorted(run)[:2]
    wanted = {d.docno for q in qids for d in run[q][:10]}
    lines = [line for line in (msmarco / "passages" / "dl19.tsv").read_text().splitlines()
             if line.split("\t", 1)[0] in wanted]
    (root / "passages.tsv").write_text("\n".join(lines) + "\n")
    (root / "cands.trec").write_text("".join(f"{q} Q0 {d.docno} {i + 1} {d.score} bm25\n"
                                             for q in qids for i, d in enumerate(run[q][:10])))
    return root, model


@pytest.mark.slow
def test_encode_then_rerank_from_the_store(tiny, data):
    root, model = tiny
    store = root / "store"
    printed = rank("encode", "--collection", root / "passages.tsv", "--store", store, "--model", model).stdout
    assert "20 documents" in printed
    out = root / "twinbert.trec"
    rank("run", "--topics", data / "msmarco-passage/topics/dl19.tsv", "--candidates", root / "cands.trec",
         "--reranker", "twinbert", "--model", model, "--store", store, "--output", out)
    assert sum(len(d) for d in read_run(out).values()) == 20
    again = root / "again" / "twinbert.trec"
    rank("run", "--topics", data / "msmarco-passage/topics/dl19.tsv", "--candidates", root / "cands.trec",
         "--reranker", "twinbert", "--model", model, "--store", store, "--output", again)
    assert again.read_bytes() == out.read_bytes()  # byte-identical on a second run
    split = json.loads((root / "twinbert.trec.json").read_text())["timing"]["reranker_ms_per_query"]
    assert {"query_encoding", "lookup", "crossing"} <= set(split) and split["query_encoding"] > 0
    bench = root / "bench.json"
    printed = rank("bench", "--topics", data / "msmarco-passage/topics/dl19.tsv", "--candidates", root / "cands.trec",
                   "--collection", root / "passages.tsv", "--reranker", "identity", "--reranker", f"twinbert={model}",
                   "--store", store, "--repeats", 1, "--warmup", 0, "--reference", f"twinbert={model}[torch]",
                   "--query-backend", "torch", "--query-backend", "onnx-int8", "--query-backend", "torch-bf16",
                   "--fusion", "none",
                   "--fusion", "bm25", "--output", bench).stdout
    assert f"1.0x faster than twinbert={model}[torch]" in printed and "MFLOP per query" in printed
    written = json.loads(bench.read_text())
    results = {r["name"]: r for r in written["results"]}
    assert results[f"twinbert={model}[onnx-int8]"]["queries"] == 2 and results["identity"]["p50_ms"] >= 0
    from ranker.cpu import native_bfloat16

    # a backend this CPU lacks keeps the name asked for (RESULTS.md finds it) and records what ran instead
    assert results[f"twinbert={model}[torch-bf16]"].get("ran") == (None if native_bfloat16() else "torch")
    from ranker.rerank.fused import DEFAULT_STUDENT_WEIGHT

    fused = f"twinbert={model}[onnx-int8]+bm25 w={DEFAULT_STUDENT_WEIGHT}"
    assert results[fused]["queries"] == 2  # the default pipeline (the student fused with BM25), timed too
    floor = written["floor"]
    assert floor["layers"] == 1 and floor["floor_ms"] > 0 and floor["gflops_per_s"] > 0
    assert written["p50_ratios"][f"twinbert={model}[torch]"][f"twinbert={model}[torch]"] == 1.0


@pytest.mark.slow
def test_candidate_missing_from_the_store(tiny, data):
    root, model = tiny
    store = root / "store-missing"
    rank("encode", "--collection", root / "passages.tsv", "--store", store, "--model", model)
    cands = root / "cands-extra.trec"
    cands.write_text((root / "cands.trec").read_text() + "1037798 Q0 not-a-passage 11 0.1 bm25\n")
    out = root / "bad.trec"
    result = rank("run", "--topics", data / "msmarco-passage/topics/dl19.tsv", "--candidates", cands,
                  "--reranker", "twinbert", "--model", model, "--store", store, "--output", out, check=False)
    assert_input_error(result, "not-a-passage", "not in the embedding store")
    assert not out.exists()


def test_encode_only_the_candidates_of_a_run(tiny):
    root, model = tiny
    first = root / "cands-first.trec"
    first.write_text("".join((root / "cands.trec").read_text().splitlines(keepends=True)[:10]))
    store = root / "store-candidates"
    printed = rank("encode", "--collection", root / "passages.tsv", "--candidates", first, "--store", store,
                   "--model", model).stdout
    assert "10 vectors" in printed
    assert sorted((store / "docnos.txt").read_text().split()) == sorted(d.docno for ds in read_run(first).values()
                                                                          for d in ds)


@pytest.mark.slow
def test_a_query_cap_beyond_the_towers_positions_and_an_output_that_is_an_input_are_refused(tiny, data):
    root, model = tiny
    store = root / "store-cap"
    rank("encode", "--collection", root / "passages.tsv", "--store", store, "--model", model)
    common = ("run", "--topics", data / "msmarco-passage/topics/dl19.tsv", "--reranker", "twinbert", "--model",
              model, "--store", store)
    capped = rank(*common, "--candidates", root / "cands.trec", "--query-max-length", 513,
                  "--output", root / "capped.trec", check=False)
    assert capped.returncode == 2 and "--query-max-length 513 is more than the query tower's 512" in capped.stderr
    before = (root / "cands.trec").read_bytes()
    over = rank(*common, "--candidates", root / "cands.trec", "--output", root / "cands.trec", check=False)
    assert over.returncode == 2 and "is also an input" in over.stderr
    assert (root / "cands.trec").read_bytes() == before and not (root / "capped.trec").exists()


@pytest.mark.slow
def test_queries_cut_to_the_cap_are_counted_and_said(tiny, data):
    root, model = tiny
    store = root / "store-cut"
    rank("encode", "--collection", root / "passages.tsv", "--store", store, "--model", model)
    common = ("run", "--topics", data / "msmarco-passage/topics/dl19.tsv", "--reranker", "twinbert", "--model",
              model, "--store", store, "--candidates", root / "cands.trec", "--fusion", "none")
    cut = rank(*common, "--query-max-length", 5, "--output", root / "cut.trec")
    stage = json.loads((root / "cut.trec.json").read_text())["pipeline"]["stages"][0]
    assert stage["query_max_length"] == 5 and stage["queries_truncated"] > 0
    assert f"twinbert: {stage['queries_truncated']} of " in cut.stderr and "longer than 5 tokens" in cut.stderr
    whole = rank(*common, "--output", root / "whole.trec")
    assert json.loads((root / "whole.trec.json").read_text())["pipeline"]["stages"][0]["queries_truncated"] == 0
    assert "warning" not in whole.stderr


@pytest.mark.slow
def test_a_biencoder_store_built_on_onnx_serves_the_int8_query_side_and_encoding_is_benchmarked(tiny, data):
    root, _ = tiny
    store = root / "minilm-onnx"
    rank("encode", "--encoder", "biencoder", "--model", "minilm", "--backend", "onnx", "--collection",
         root / "passages.tsv", "--store", store)
    bench = root / "bench-bi.json"
    printed = rank("bench", "--topics", data / "msmarco-passage/topics/dl19.tsv", "--candidates", root / "cands.trec",
                   "--collection", root / "passages.tsv", "--reranker", f"biencoder[onnx-int8]=minilm@{store}",
                   "--reranker", "biencoder=minilm", "--repeats", 1, "--warmup", 0, "--output", bench).stdout
    assert "biencoder[onnx-int8]=minilm@store" in printed
    written = json.loads(bench.read_text())
    flags = set(next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":")[1].split())
    assert ("avx2" in written["cpu"]["vector_extensions"]) == ("avx2" in flags)  # the CPU's extensions recorded
    assert ("avx512_vnni" in written["cpu"]["vector_extensions"]) == ("avx512_vnni" in flags)
    vnni = not flags.isdisjoint({"avx512_vnni", "avx_vnni", "amx_int8"})
    assert written["cpu"]["int8_weight_bits"] == (8 if vnni else 7)  # x86 without VNNI: 7-bit int8 weights
    assert {r["name"] for r in written["results"]} == {"biencoder[onnx-int8]=minilm@store", "biencoder=minilm"}
    assert_input_error(rank("bench", "--topics", data / "msmarco-passage/topics/dl19.tsv", "--candidates",
                            root / "cands.trec", "--collection", root / "passages.tsv", "--reranker",
                            "identity[onnx]", check=False), "a [BACKEND] is for biencoder")
    speed = root / "encode-speed.json"
    rank("bench-encode", "--collection", root / "passages.tsv", "--model", "minilm", "--passages", 8,
         "--threads", 1, "--output", speed)
    results = json.loads(speed.read_text())["results"]
    assert [r["backend"] for r in results] == ["torch", "onnx"] and all(r["passages"] == 8 for r in results)
    assert results[1]["min_cosine_to_first"] > 0.9999 and results[1]["passages_per_s"] > 0


@pytest.mark.slow
def test_rank_store_verbs_build_add_delete_compact_and_merge(tiny):
    from ranker.store.embeddings import EmbeddingStore

    root, model = tiny
    lines = (root / "passages.tsv").read_text().splitlines()
    (root / "first.tsv").write_text("\n".join(lines[:12]) + "\n")
    (root / "rest.tsv").write_text("\n".join(lines[12:]) + "\n")
    store = root / "verbs"
    rank("store", "build", "--store", store, "--collection", root / "first.tsv", "--model", model)
    rank("store", "add", "--store", store, "--collection", root / "rest.tsv", "--model", model)
    assert len(EmbeddingStore.load(store)) == 20
    gone = [line.split("\t", 1)[0] for line in lines[:2]]
    (root / "gone.txt").write_text("\n".join(gone) + "\n")
    rank("store", "delete", "--store", store, "--docnos", root / "gone.txt")
    rank("store", "compact", "--store", store)
    compacted = EmbeddingStore.load(store)
    assert len(compacted) == 18 and not any(d in compacted for d in gone)
    for i in range(2):
        rank("store", "build", "--store", root / f"shard{i}", "--collection", root / "passages.tsv", "--model",
             model, "--shard", f"{i}/2")
    rank("store", "merge", "--store", root / "merged", root / "shard0", root / "shard1")
    assert len(EmbeddingStore.load(root / "merged")) == 20
    assert_input_error(rank("store", "add", "--store", store, "--collection", root / "rest.tsv", "--model", model,
                            check=False), "already")
