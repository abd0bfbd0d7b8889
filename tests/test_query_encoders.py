"""Query-tower backends: the Rust tokenizer gives the wrapper's ids, every backend agrees with the PyTorch tower,
exported graphs are cached by fingerprint and rebuilt when stale, and the bi-encoder and sentence-transformers
peers rank from a store as they do from text."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker import cpu  # noqa: E402
from ranker.errors import RankerError  # noqa: E402
from ranker.eval.floor import encoder_flops  # noqa: E402
from ranker.models import onnx_graphs  # noqa: E402
from ranker.models.biencoder import BiEncoder  # noqa: E402
from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.query_encoders import QueryTokenizer, make_query_encoder, query_graph  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.rerank.biencoder import BiEncoderReranker  # noqa: E402
from ranker.store.build import build_store  # noqa: E402
from ranker.store.embeddings import StoreMismatchError  # noqa: E402
from ranker.types import Query, ScoredDoc  # noqa: E402

QUERIES = ["what is the capital of france", "vaccines",
           "a much longer question about the side effects of the medication people take for high blood pressure, "
           "asked the way people paste text into a search box, going on well past thirty-two tokens"]
PASSAGES = {"d0": "Paris is the capital and most populous city of France.",
            "d1": "Vaccines train the immune system to recognise a pathogen.",
            "d2": "The Eiffel Tower was finished in 1889."}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture
def model(tmp_path) -> TwinBert:
    """A saved 2-layer student (so its graphs are cached beside it), with non-uniform pooling weights."""
    torch.manual_seed(0)
    twin = TwinBert(TwinBertConfig(num_layers=2), device="cpu")
    torch.nn.init.normal_(twin.query_tower.pooling.score.weight, std=0.5)
    return TwinBert.load(twin.save(tmp_path / "student"), device="cpu")


def reference(model: TwinBert, texts: list[str]) -> np.ndarray:
    return model.encode_queries(texts).numpy()


def test_the_rust_tokenizer_gives_the_wrappers_ids_and_counts_truncations(model):
    tokenizer = model.query_tower.tokenizer
    ids, mask, truncated = QueryTokenizer(tokenizer, 32)(QUERIES)
    want = tokenizer(QUERIES, truncation=True, max_length=32, padding=True, return_tensors="np")
    assert (ids == want["input_ids"]).all() and (mask == want["attention_mask"]).all()
    assert truncated == 1 and ids.shape[1] == 32
    one, _, none = QueryTokenizer(tokenizer, 32)(QUERIES[1:2])
    assert none == 0 and one.shape == (1, len(tokenizer(QUERIES[1])["input_ids"]))  # no padding for one query


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_float32_backends_equal_the_pytorch_tower(model, backend):
    encoder = make_query_encoder(model, backend, batch_size=2)  # two batches, one padded
    got = encoder.encode(QUERIES)
    assert np.abs(got - reference(model, QUERIES)).max() < 1e-4
    assert encoder.truncated == 1 and encoder.backend == backend


def test_int8_graph_stays_close_to_float32_and_a_querys_vector_ignores_its_batch(model):
    encoder = make_query_encoder(model, "onnx-int8")
    got = encoder.encode(QUERIES)
    assert cosine(got, reference(model, QUERIES)).min() > 0.98
    alone = np.concatenate([encoder.encode([q]) for q in QUERIES])
    assert (alone == got).all()  # activation scales are per pass: a batch would mix them


@pytest.mark.parametrize("machine, flags, seven_bits", [
    ("x86_64", {"avx2", "fma"}, True),  # AVX2 alone: 16-bit pair sums saturate
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, False),
    ("AMD64", {"avx2", "avx_vnni"}, False),
    ("x86_64", set(), True),  # flags unreadable: the safe side
    ("aarch64", {"asimd", "asimddp"}, False),
])
def test_int8_weights_keep_seven_bits_only_on_x86_without_vnni(monkeypatch, machine, flags, seven_bits):
    monkeypatch.setattr(cpu.platform, "machine", lambda: machine)
    monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
    assert cpu.int8_reduce_range() is seven_bits


def test_seven_bit_int8_graphs_are_cached_apart_and_stay_close_to_float32(model, monkeypatch):
    from ranker.io.artifact import read_metadata

    graphs = {}
    for seven_bits in (False, True):
        monkeypatch.setattr(onnx_graphs, "int8_reduce_range", lambda seven_bits=seven_bits: seven_bits)
        graphs[seven_bits] = query_graph(model, "int8")
        recipe = read_metadata(graphs[seven_bits].parent, onnx_graphs.GRAPH_TYPE)["recipe"]
        assert recipe.get("reduce_range", False) is seven_bits
        assert {k: v for k, v in recipe.items() if k != "reduce_range"} == onnx_graphs.RECIPE["int8"]
        got = make_query_encoder(model, "onnx-int8").encode(QUERIES)
        assert cosine(got, reference(model, QUERIES)).min() > 0.98
    assert graphs[False].parent != graphs[True].parent and graphs[False].is_file()  # a CPU of each kind keeps its own


def test_a_graph_is_cached_beside_the_model_and_reused(model, caplog):
    caplog.set_level("INFO", logger="ranker")
    first = query_graph(model, "float32")
    assert first.parent.parent == model.path / "onnx" and "exporting" in caplog.text
    caplog.clear()
    mtime = first.stat().st_mtime_ns
    assert query_graph(model, "float32") == first and first.stat().st_mtime_ns == mtime
    assert "exporting" not in caplog.text


def test_a_changed_model_gets_a_new_graph_and_the_least_recently_used_beyond_the_limit_go(model, monkeypatch):
    old = query_graph(model, "float32")
    with torch.no_grad():
        model.query_tower.pooling.score.weight.add_(0.5)
    new = query_graph(model, "float32")
    assert new != old and old.parent.exists()  # another model's graph under a shared cache is kept
    monkeypatch.setattr(onnx_graphs, "CACHED_GRAPHS", 2)
    os.utime(old.parent, (1, 1))  # used long ago
    query_graph(model, "int8")
    assert not old.parent.exists() and new.parent.exists()
    got = make_query_encoder(model, "onnx").encode(QUERIES)
    assert np.abs(got - reference(model, QUERIES)).max() < 1e-4  # the changed model's vectors, not the old ones


def test_an_altered_graph_or_another_recipe_is_rebuilt_and_never_used(model, caplog, monkeypatch):
    caplog.set_level("INFO", logger="ranker")
    graph = query_graph(model, "float32")
    graph.write_bytes(graph.read_bytes()[:-10] + b"0123456789")
    caplog.clear()
    with pytest.raises(RankerError, match="changed since export"):
        onnx_graphs.load_graph(graph.parent)
    assert query_graph(model, "float32") == graph
    assert "the graph file changed since export" in caplog.text
    caplog.clear()
    onnx_graphs.load_graph(graph.parent)  # rebuilt: its hash matches again
    monkeypatch.setitem(onnx_graphs.RECIPE, "float32", {"opset": 16})
    other = query_graph(model, "float32")
    assert other != graph and graph.is_file() and "none cached" in caplog.text  # a graph per recipe


def test_a_graph_that_disagrees_with_the_model_is_refused(model, monkeypatch):
    monkeypatch.setitem(onnx_graphs.TOLERANCE, "float32", -1.0)
    with pytest.raises(RankerError, match="disagrees with the PyTorch query encoder"):
        query_graph(model, "float32")
    assert not list((model.path / "onnx").glob("query-*"))


def test_an_unwritable_model_folder_caches_elsewhere(model, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_graphs.os, "access", lambda path, mode: False)
    monkeypatch.setenv("RANKER_CACHE", str(tmp_path / "cache"))
    assert query_graph(model, "float32").is_relative_to(tmp_path / "cache" / "onnx")


def test_floor_counts_a_layers_matrix_multiplies():
    # 2 tokens, width 4, feed-forward 8: projections 8*2*16, scores 4*4*4, feed-forward 4*2*4*8
    assert encoder_flops(tokens=2, layers=1, hidden=4, intermediate=8) == 256 + 64 + 256
    assert encoder_flops(tokens=2, layers=3, hidden=4, intermediate=8) == 3 * 576


@pytest.fixture(scope="module")
def minilm() -> BiEncoder:
    return BiEncoder(progress=False, device="cpu")


@pytest.fixture(scope="module")
def minilm_store(minilm, tmp_path_factory):
    return build_store(minilm, list(PASSAGES.items()), tmp_path_factory.mktemp("bi") / "store", progress=False)


TOPICS = {"q1": Query("q1", QUERIES[0])}
CANDIDATES = {"q1": [ScoredDoc("q1", d, 0.0) for d in PASSAGES]}


def scores(ranking) -> dict[str, float]:
    return {d.docno: d.score for d in ranking["q1"]}


def test_a_bi_encoder_ranks_from_its_store_as_from_text(minilm, minilm_store):
    from_text = scores(BiEncoderReranker(PASSAGES, minilm)(TOPICS, CANDIDATES))
    from_store = scores(BiEncoderReranker(None, minilm, minilm_store.path)(TOPICS, CANDIDATES))
    assert from_store == pytest.approx(from_text, abs=2e-3)  # float16 vectors


def test_sentence_transformers_peer_ranks_as_the_bi_encoder(minilm, minilm_store):
    from ranker.rerank.peers import SentenceTransformerReranker

    peer = scores(SentenceTransformerReranker(None, minilm_store.path)(TOPICS, CANDIDATES))
    ours = scores(BiEncoderReranker(None, minilm, minilm_store.path)(TOPICS, CANDIDATES))
    assert peer == pytest.approx(ours, abs=1e-3)


def test_a_store_of_another_model_is_refused_by_both(model, minilm, minilm_store, tmp_path):
    from ranker.rerank.peers import SentenceTransformerReranker

    student_store = build_store(model, list(PASSAGES.items()), tmp_path / "student-store", progress=False)
    with pytest.raises(StoreMismatchError):
        BiEncoderReranker(None, minilm, student_store.path)
    with pytest.raises(StoreMismatchError):
        SentenceTransformerReranker(None, student_store.path)
    with pytest.raises(StoreMismatchError):
        SentenceTransformerReranker(model.path, minilm_store.path)
    peer = SentenceTransformerReranker(model.path, student_store.path)
    assert scores(peer(TOPICS, CANDIDATES)).keys() == PASSAGES.keys()


def test_a_forged_graph_with_a_matching_hash_is_one_line(model):
    """A cached graph replaced by bytes ONNX Runtime cannot load, its recorded hash forged to match."""
    import json

    graph = query_graph(model, "float32")
    graph.write_bytes(b"not an onnx graph")
    meta = json.loads((graph.parent / "ranker.json").read_text())
    meta["sha256"] = onnx_graphs._sha256(graph)
    (graph.parent / "ranker.json").write_text(json.dumps(meta))
    with pytest.raises(RankerError, match="not a graph ONNX Runtime can load .*: delete .* exported again"):
        make_query_encoder(model, "onnx")
    shutil.rmtree(graph.parent)
    assert make_query_encoder(model, "onnx").encode(QUERIES).shape[0] == len(QUERIES)
