"""TwinBERT model: pooling ignores padding, crossing shapes and gradients, the res crossing's symmetry,
save/load round trips with a stable document fingerprint, and the reranker over an embedding store."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.errors import MissingInputError, RankerError  # noqa: E402
from ranker.models.biencoder import BiEncoder  # noqa: E402
from ranker.models.config import TwinBertConfig  # noqa: E402
from ranker.models.twinbert import TwinBert  # noqa: E402
from ranker.rerank.twinbert import TwinBertReranker  # noqa: E402
from ranker.store.build import build_store  # noqa: E402
from ranker.store.embeddings import StoreMismatchError  # noqa: E402
from ranker.types import Query, ScoredDoc  # noqa: E402

QUERIES = ["what is the capital of france", "how do vaccines work"]
DOCS = ["Paris is the capital and most populous city of France.",
        "Vaccines train the immune system to recognise a pathogen.",
        "The Eiffel Tower was finished in 1889."]
LONG = " ".join(["A much longer passage about the history of European capitals and their monuments."] * 12)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def two_towers() -> TwinBert:
    """Two 2-layer encoders, with random (non-uniform) pooling weights so that padding would show."""
    torch.manual_seed(0)
    model = TwinBert(TwinBertConfig(num_layers=2, shared_encoder=False, proj_dim=32, crossing="res"), device="cpu")
    for tower in (model.query_tower, model.doc_tower):
        torch.nn.init.normal_(tower.pooling.score.weight, std=0.5)
    return model


@pytest.fixture(scope="module")
def shared() -> TwinBert:
    torch.manual_seed(0)
    return TwinBert(TwinBertConfig(num_layers=1, crossing="res"), device="cpu")


@pytest.mark.parametrize("pooling", ["weighted", "cls"])
def test_padding_never_changes_a_pooled_vector(two_towers, pooling):
    model = two_towers
    if pooling == "cls":
        torch.manual_seed(0)
        model = TwinBert(TwinBertConfig(num_layers=2, shared_encoder=False, proj_dim=32, crossing="res",
                                        pooling="cls"), device="cpu")
    alone = model.encode_docs([DOCS[2]])
    padded = model.encode_docs([DOCS[2], LONG], batch_size=2)[:1]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(model.encode_queries(["capital", LONG], batch_size=2)[:1],
                               model.encode_queries(["capital"]), atol=1e-5, rtol=0)


def test_untrained_cos_model_ranks_by_the_biencoder_cosine():
    model = TwinBert(TwinBertConfig(crossing="cos", cos_scale=3.0), device="cpu")
    pairs = [(q, d) for q in QUERIES for d in DOCS]
    scores = model.cross(model.encode_queries([q for q, _ in pairs]), model.encode_docs([d for _, d in pairs]))
    np.testing.assert_allclose(scores.detach().numpy(), 3.0 * BiEncoder(progress=False).score_pairs(pairs),
                               atol=1e-5)


def test_crossing_shapes(two_towers):
    q, d = two_towers.encode_queries(QUERIES), two_towers.encode_docs(DOCS)
    assert two_towers.cross(q, d[:2]).shape == (2,)
    assert two_towers.cross(q[0], d).shape == (3,)
    assert two_towers.cross(q, torch.stack([d, d])).shape == (2, 3)
    assert two_towers(QUERIES, [DOCS, DOCS]).shape == (2, 3)
    with pytest.raises(RankerError, match="same size"):
        two_towers(QUERIES, [DOCS, DOCS[:2]])


def test_gradients_reach_both_encoders_and_the_crossing(two_towers):
    model = copy.deepcopy(two_towers).train()
    assert model.query_tower is not model.doc_tower
    model(QUERIES, [DOCS, DOCS]).sum().backward()
    for name in ("query_tower.encoder.encoder.layer.0.attention.self.query.weight",
                 "doc_tower.encoder.encoder.layer.0.attention.self.query.weight",
                 "query_tower.pooling.score.weight", "doc_tower.projection.weight",
                 "crossing.w1.weight", "crossing.w2.weight", "crossing.out.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_res_crossing_is_symmetric(two_towers):
    q, d = torch.randn(5, two_towers.dim), torch.randn(5, two_towers.dim)
    with torch.no_grad():
        assert torch.equal(two_towers.cross(q, d), two_towers.cross(d, q))


def _scores(model: TwinBert) -> torch.Tensor:
    with torch.no_grad():
        return model.cross(model.encode_queries(QUERIES), torch.stack([model.encode_docs(DOCS)] * 2))


def test_save_load_gives_identical_scores_and_fingerprint(two_towers, tmp_path):
    loaded = TwinBert.load(two_towers.save(tmp_path / "fp32", torch.float32), device="cpu")
    assert torch.equal(_scores(loaded), _scores(two_towers))
    assert loaded.fingerprint() == two_towers.fingerprint()

    half = TwinBert.load(two_towers.save(tmp_path / "fp16"), device="cpu")
    assert half.fingerprint() == two_towers.fingerprint()
    torch.testing.assert_close(_scores(half), _scores(two_towers), atol=2e-2, rtol=0)
    again = TwinBert.load(half.save(tmp_path / "fp16-again"), device="cpu")
    assert torch.equal(_scores(again), _scores(half))
    assert again.fingerprint() == half.fingerprint()
    saved = json.loads((tmp_path / "fp16" / "ranker.json").read_text())
    assert saved["type"] == "twinbert" and saved["score_type"] == "logit" and saved["format_version"] == 1
    assert saved["doc_fingerprint"] == two_towers.fingerprint() and saved["dtype"] == "float16"


def test_a_shared_encoder_is_saved_once(shared, tmp_path):
    path = shared.save(tmp_path / "model")
    assert not (path / "query_encoder").exists()
    assert json.loads((path / "ranker.json").read_text())["encoders"] == {"doc": "doc_encoder",
                                                                                  "query": "doc_encoder"}
    loaded = TwinBert.load(path, device="cpu")
    assert loaded.query_tower is loaded.doc_tower
    assert torch.equal(loaded.crossing.w1.weight, shared.crossing.w1.weight)


def test_fingerprint_covers_the_document_side_only(two_towers):
    model = copy.deepcopy(two_towers)
    with torch.no_grad():
        model.query_tower.encoder.embeddings.word_embeddings.weight[0] += 1
        model.crossing.out.bias += 1
    assert model.fingerprint() == two_towers.fingerprint()
    with torch.no_grad():
        model.doc_tower.pooling.score.weight[0, 0] += 1
    assert model.fingerprint() != two_towers.fingerprint()


def test_loading_refuses_other_folders(tmp_path):
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "ranker.json").write_text(json.dumps({"type": "cross-encoder"}))
    with pytest.raises(RankerError, match="is a cross-encoder artifact, not twinbert"):
        TwinBert.load(tmp_path / "teacher")
    (tmp_path / "old").mkdir()  # an older folder's metadata file names its type by model_type
    (tmp_path / "old" / "ranker_config.json").write_text(json.dumps({"model_type": "cross-encoder"}))
    with pytest.raises(RankerError, match="is a cross-encoder artifact, not twinbert"):
        TwinBert.load(tmp_path / "old")
    with pytest.raises(MissingInputError, match="not a ranker artifact"):
        TwinBert.load(tmp_path)


def test_config_is_checked():
    with pytest.raises(RankerError, match="pooling"):
        TwinBertConfig(pooling="mean")
    with pytest.raises(RankerError, match="cannot keep 7"):
        TwinBert(TwinBertConfig(num_layers=7))


# ---------------------------------------------------------------- reranker

CANDIDATES = {"q1": [ScoredDoc("q1", "d0", 3.0), ScoredDoc("q1", "d1", 2.0), ScoredDoc("q1", "d2", 1.0)],
              "q2": [ScoredDoc("q2", "d1", 2.0), ScoredDoc("q2", "d2", 1.0)]}
TOPICS = {"q1": Query("q1", QUERIES[0]), "q2": Query("q2", QUERIES[1])}
TEXTS = {f"d{i}": text for i, text in enumerate(DOCS)}


@pytest.fixture(scope="module")
def store_path(shared, tmp_path_factory):
    path = tmp_path_factory.mktemp("stores") / "int8"
    build_store(shared, TEXTS.items(), path, dtype="int8", progress=False)
    return path


def test_reranker_scores_with_cached_vectors(shared, store_path):
    reranker = TwinBertReranker(shared, store_path, query_backend="torch")
    ranking = reranker(TOPICS, CANDIDATES)
    assert {qid: sorted(d.docno for d in docs) for qid, docs in ranking.items()} == {
        qid: sorted(d.docno for d in docs) for qid, docs in CANDIDATES.items()}
    q = shared.encode_queries([QUERIES[0]])[0]
    expected = shared.cross(q, torch.from_numpy(reranker.store.lookup(["d0", "d1", "d2"]))).detach()
    got = {d.docno: d.score for d in ranking["q1"]}
    np.testing.assert_allclose([got["d0"], got["d1"], got["d2"]], expected.numpy(), rtol=1e-6)
    assert set(reranker.timing) == {"query_encoding", "lookup", "doc_encoding", "crossing"}
    assert reranker.timing["query_encoding"] > 0 and reranker.timing["crossing"] > 0
    assert reranker.config()["fingerprint"] == shared.fingerprint()


def test_a_missing_candidate_is_named(shared, store_path):
    candidates = {"q1": [*CANDIDATES["q1"], ScoredDoc("q1", "unknown-doc", 0.0)]}
    with pytest.raises(RankerError, match="unknown-doc"):
        TwinBertReranker(shared, store_path)(TOPICS, candidates)


def test_encode_missing_scores_like_the_store(shared, store_path, tmp_path):
    partial = build_store(shared, [("d0", DOCS[0]), ("d1", DOCS[1])], tmp_path / "partial", dtype="int8",
                          progress=False)
    full = {d.docno: d.score for d in TwinBertReranker(shared, store_path)(TOPICS, CANDIDATES)["q1"]}
    reranker = TwinBertReranker(shared, partial, texts=TEXTS, encode_missing=True)
    got = {d.docno: d.score for d in reranker(TOPICS, CANDIDATES)["q1"]}
    assert got == pytest.approx(full, abs=1e-6)
    assert reranker.timing["doc_encoding"] > 0


def test_reranker_refuses_another_models_store(two_towers, store_path):
    with pytest.raises(StoreMismatchError):
        TwinBertReranker(two_towers, store_path)


def test_bfloat16_query_tower_scores_close_to_float32_and_leaves_the_model_alone(shared, store_path, monkeypatch):
    from ranker.models import query_encoders

    monkeypatch.setattr(query_encoders, "native_bfloat16", lambda: True)
    exact = {d.docno: d.score for d in TwinBertReranker(shared, store_path, query_backend="torch")(
        TOPICS, CANDIDATES)["q1"]}
    reranker = TwinBertReranker(shared, store_path, query_backend="torch-bf16")
    fast = {d.docno: d.score for d in reranker(TOPICS, CANDIDATES)["q1"]}
    assert fast.keys() == exact.keys() and fast != exact
    assert fast == pytest.approx(exact, abs=0.05)
    assert next(reranker.query_encoder.tower.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in shared.parameters())
    assert reranker.config()["query_backend"] == "torch-bf16"


def test_bfloat16_falls_back_to_float32_without_native_support(shared, store_path, monkeypatch, caplog):
    from ranker.models import query_encoders

    monkeypatch.setattr(query_encoders, "native_bfloat16", lambda: False)
    caplog.set_level("WARNING", logger="ranker")
    reranker = TwinBertReranker(shared, store_path, query_backend="torch-bf16")
    assert reranker.config()["query_backend"] == "torch" and "no native bfloat16" in caplog.text
    assert next(reranker.query_encoder.tower.parameters()).dtype == torch.float32


def test_unknown_query_backend_is_refused(shared, store_path):
    with pytest.raises(RankerError, match="query backend"):
        TwinBertReranker(shared, store_path, query_backend="float8")


def test_a_tokenizer_from_another_model_is_refused(shared, tmp_path):
    from transformers import AutoTokenizer

    from ranker.models.cross_encoder import CrossEncoder

    folder = shared.save(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder / "doc_encoder")
    tokenizer.add_tokens([f"extra-token-{i}" for i in range(3)])  # ids past the embedding table
    tokenizer.save_pretrained(folder / "doc_encoder")
    with pytest.raises(RankerError, match="tokenizer has 30525 tokens but the model's vocabulary 30522"):
        TwinBert.load(folder)
    with pytest.raises(RankerError, match="do not belong together"):
        CrossEncoder.from_pretrained(folder / "doc_encoder")


def test_a_long_query_or_passage_is_cut_to_the_configured_tokens(shared):
    """Truncation rule: queries keep config.query_max_length tokens, passages config.doc_max_length."""
    cut = {"query": shared.config.query_max_length, "doc": shared.config.doc_max_length}
    long, short = " ".join(["capital"] * 5000), " ".join(["capital"] * (cut["doc"] + 5))
    torch.testing.assert_close(shared.encode_queries([long]), shared.encode_queries([" ".join(["capital"] * 40)]))
    torch.testing.assert_close(shared.encode_docs([long]), shared.encode_docs([short]))
    assert not torch.allclose(shared.encode_queries(["capital"]), shared.encode_queries([long]))
