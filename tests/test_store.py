"""Embedding store: float16 and int8 round trips, the tanh 256-level rule, fingerprint checks, and an
interrupted build resuming to the same bytes as an uninterrupted one."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.errors import MissingInputError, RankerError  # noqa: E402
from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.store.build import build_store, convert_store  # noqa: E402
from ranker.store.embeddings import EmbeddingStore, StoreMismatchError, partial_path, text_hash  # noqa: E402
from ranker.store.quantization import dequantize, quantize  # noqa: E402
from ranker.types import Doc  # noqa: E402

DOCS = [Doc(f"D{i}", text) for i, text in enumerate([
    "Paris is the capital and most populous city of France.",
    "Vaccines train the immune system to recognise a pathogen.",
    "The Eiffel Tower was finished in 1889.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen in plants.",
    "A short one.",
    "Rivers carry sediment to the sea, building deltas where the current slows.",
    "Neural rerankers rescore the candidates a first-stage retriever returns.",
])]
FILES = ("ranker.json", "embeddings.npy", "scales.npy", "docnos.txt", "text_hashes.npy")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model() -> TwinBert:
    torch.manual_seed(0)
    return TwinBert(TwinBertConfig(num_layers=1), device="cpu")


@pytest.fixture(scope="module")
def vectors(model) -> np.ndarray:
    return model.encode_docs([d.contents for d in DOCS]).numpy()


@pytest.fixture(scope="module")
def half_store(model, tmp_path_factory) -> EmbeddingStore:
    return build_store(model, DOCS, tmp_path_factory.mktemp("stores") / "fp16", batch_size=3, progress=False)


def test_float16_round_trip(half_store, model, vectors):
    store = EmbeddingStore.load(half_store.path, model=model)
    assert len(store) == len(DOCS) and "D3" in store and "D9" not in store
    assert store.docnos == [d.docno for d in DOCS]
    assert store.meta["quantization"] == "float16" and store.meta["count"] == len(DOCS)
    assert store.size_bytes() == len(DOCS) * model.dim * 2
    np.testing.assert_allclose(store.lookup(["D5", "D0", "D5"]), vectors[[5, 0, 5]], rtol=1e-3, atol=1e-3)
    assert store.lookup([]).shape == (0, model.dim)
    with pytest.raises(RankerError, match="D9"):
        store.lookup(["D0", "D9"])


def test_int8_is_close_to_float16(model, half_store, tmp_path):
    store = build_store(model, DOCS, tmp_path / "int8", dtype="int8", progress=False)
    assert store.meta["quantization"] == "int8-absmax" and store.embeddings.dtype == np.int8
    assert store.size_bytes() == len(DOCS) * (model.dim + 4)
    half = half_store.lookup(store.docnos)
    error = np.abs(store.lookup(store.docnos) - half).max(axis=1)
    assert np.all(error <= np.abs(half).max(axis=1) / 127)


def test_converting_a_float16_store_quantizes_its_vectors(model, half_store, tmp_path):
    converted = convert_store(model, half_store.path, tmp_path / "int8", "int8", chunk_size=3)
    assert converted.docnos == half_store.docnos and converted.fingerprint == half_store.fingerprint
    assert converted.meta["quantization"] == "int8-absmax" and converted.meta["converted_from"] == "float16"
    half = half_store.lookup(half_store.docnos)
    np.testing.assert_array_equal(converted.embeddings, quantize(half, "int8-absmax")[0])
    with pytest.raises(RankerError, match="already exists"):
        convert_store(model, half_store.path, tmp_path / "int8")
    with pytest.raises(StoreMismatchError):
        convert_store(TwinBert(TwinBertConfig(num_layers=2), device="cpu"), half_store.path, tmp_path / "other")


def test_a_tanh_projection_uses_256_levels(tmp_path):
    torch.manual_seed(0)
    model = TwinBert(TwinBertConfig(num_layers=1, proj_dim=16), device="cpu")
    store = build_store(model, DOCS, tmp_path / "tanh", dtype="int8", progress=False)
    assert store.meta["quantization"] == "int8-tanh256" and store.scales is None
    assert "(code + 128) / 127.5 - 1" in store.meta["quantization_rule"]
    exact = model.encode_docs([d.contents for d in DOCS]).numpy()
    assert np.abs(store.lookup(store.docnos) - exact).max() <= 1 / 255 + 1e-6


def test_quantization_rules():
    levels = np.array([[-1.0, 1.0, 0.0, 0.5]], dtype=np.float32)
    codes, scales = quantize(levels, "int8-tanh256")
    assert codes.tolist() == [[-128, 127, 0, 63]] and scales is None
    np.testing.assert_allclose(dequantize(codes, None, "int8-tanh256")[0, :2], [-1, 1])
    codes, scales = quantize(np.zeros((1, 4), dtype=np.float32), "int8-absmax")
    assert not dequantize(codes, scales, "int8-absmax").any()


def test_another_models_store_is_refused(half_store, tmp_path):
    torch.manual_seed(1)
    other = TwinBert(TwinBertConfig(num_layers=1, doc_max_length=64), device="cpu")
    with pytest.raises(StoreMismatchError) as refused:
        EmbeddingStore.load(half_store.path, model=other)
    assert half_store.fingerprint in str(refused.value) and other.fingerprint() in str(refused.value)


def _stopping(docs: list[Doc], after: int) -> Iterator[Doc]:
    """The documents, then an exception after ``after`` of them (a build killed part-way)."""
    yield from docs[:after]
    raise KeyboardInterrupt


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_an_interrupted_build_resumes_to_the_same_store(model, tmp_path, dtype):
    options = {"dtype": dtype, "batch_size": 2, "chunk_size": 2, "progress": False}
    whole = build_store(model, DOCS, tmp_path / "whole", **options).path

    resumed = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        build_store(model, _stopping(DOCS, 5), resumed, **options)
    partial = partial_path(resumed)
    assert not resumed.exists()
    assert json.loads((partial / "progress.json").read_text())["rows"] == 4
    with pytest.raises(MissingInputError, match="resume"):
        EmbeddingStore.load(resumed)
    for name in ("embeddings.npy", "docnos.txt"):  # a chunk half-written when the process died
        with open(partial / name, "ab") as f:
            f.write(b"torn chunk\n")

    build_store(model, DOCS, resumed, **options)
    assert not partial.exists() and not (resumed / "progress.json").exists()
    for name in FILES:
        if (whole / name).exists() or (resumed / name).exists():
            assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name


def test_resuming_checks_documents_and_settings(model, tmp_path):
    path = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        build_store(model, _stopping(DOCS, 3), path, batch_size=2, chunk_size=2, progress=False)
    with pytest.raises(RankerError, match="batch_size"):
        build_store(model, DOCS, path, batch_size=4, progress=False)
    with pytest.raises(RankerError, match="not the documents"):
        build_store(model, DOCS[1:], path, batch_size=2, progress=False)
    store = build_store(model, DOCS, path, batch_size=2, progress=False)
    assert store.docnos == [d.docno for d in DOCS]
    with pytest.raises(RankerError, match="already exists"):
        build_store(model, DOCS, path, progress=False)


def test_pairs_and_bad_docnos(model, tmp_path):
    store = build_store(model, [("a", "first text"), ("b", "second text")], tmp_path / "pairs", progress=False)
    assert store.docnos == ["a", "b"]
    with pytest.raises(RankerError, match="line breaks"):
        build_store(model, [("a\nb", "text")], tmp_path / "bad", progress=False)


def test_a_store_finds_passages_by_their_text(model, half_store, tmp_path):
    """Each row's text hash is recorded, so a passage sent as text finds its vector; a conversion keeps them."""
    rows = half_store.rows_of_texts([DOCS[2].contents, "a passage the store never saw", DOCS[0].contents])
    assert rows == [half_store.docnos.index("D2"), None, half_store.docnos.index("D0")]
    assert np.array_equal(half_store.lookup_rows([rows[0]]), half_store.lookup(["D2"]))
    assert bytes(half_store.hashes[0]) == text_hash(DOCS[int(half_store.docnos[0][1:])].contents)
    converted = convert_store(model, half_store.path, tmp_path / "int8")
    assert converted.rows_of_texts([DOCS[2].contents]) == [rows[0]]
