"""The asymmetric TwinBERT (a bi-encoder's stored vectors as the passage side), query-tower alignment, training
against a frozen passage side, and teacher scores read from a run.

The bi-encoder here is the bundled all-MiniLM-L6-v2 (the shipped student uses all-mpnet-base-v2 the same way),
the query tower one MiniLM layer, so every test runs in seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ranker.errors import RankerError
from ranker.first_stage.dense import DenseRetriever
from ranker.io.datasets import strip_prefix
from ranker.io.formats import read_collection, read_run, write_run
from ranker.models.biencoder import BiEncoder
from ranker.models.config import TwinBertConfig
from ranker.models.twinbert import TwinBert, asymmetric_config
from ranker.rerank.twinbert import TwinBertReranker
from ranker.store.build import build_store
from ranker.store.embeddings import EmbeddingStore, StoreMismatchError
from ranker.train.config import AlignConfig, DistillConfig, LoopConfig
from ranker.train.examples import distill_data, validation_split
from ranker.train.frozen import StoreVectors
from ranker.train.scores import run_teacher_scores
from ranker.types import Query, ScoredDoc, cutoff

VAL_DEPTH = 3


@pytest.fixture(scope="module")
def biencoder():
    return BiEncoder("minilm", progress=False)


@pytest.fixture(scope="module")
def val_store(data, biencoder, tmp_path_factory):
    """The bi-encoder's store of the MS MARCO validation queries' top candidates."""
    held = validation_split(data, scifact=False)
    docs = {d.docno for ds in cutoff(held.validation.candidates, VAL_DEPTH).values() for d in ds}
    path = tmp_path_factory.mktemp("stores") / "val"
    build_store(biencoder, [(strip_prefix(d), held.texts[d]) for d in sorted(docs)], path, progress=False)
    return path


@pytest.fixture(scope="module")
def dev600(data):
    return distill_data(data, sets=("dev600",))


@pytest.fixture(scope="module")
def train_store(dev600, biencoder, tmp_path_factory):
    """The bi-encoder's store of the first 6 dev600 queries' candidates."""
    qids = list(dev600.queries)[:6]
    docs = {d.docno for q in qids for d in dev600.candidates[q]}
    path = tmp_path_factory.mktemp("stores") / "dev600"
    build_store(biencoder, [(d, dev600.texts[d]) for d in sorted(docs)], path, progress=False)
    return path, qids


def small(**fields):
    return asymmetric_config("minilm", num_layers=1, **fields)


def test_the_passage_side_is_the_biencoder_and_the_folder_holds_the_query_side_only(biencoder, val_store, tmp_path):
    torch.manual_seed(0)
    model = TwinBert(small(), device="cpu")
    assert model.fingerprint() == biencoder.fingerprint() and not model.bounded and model.dim == 384
    texts = ["a passage about cats", "rivers of europe"]
    assert torch.allclose(model.encode_docs(texts), torch.from_numpy(biencoder.encode(texts)), atol=1e-6)
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["head.safetensors", "query_encoder", "ranker.json"]
    loaded = TwinBert.load(tmp_path / "m", device="cpu")
    assert loaded._doc_encoder is None  # serving from a store never loads the bi-encoder
    assert loaded.fingerprint() == biencoder.fingerprint()
    # the bi-encoder's own store serves the student: scores are the crossing of the query and the stored vector
    reranker = TwinBertReranker(loaded, val_store, query_backend="torch")
    docnos = reranker.store.docnos[:4]
    ranked = reranker.rerank({"q": Query("q", "what is a river")}, {"q": [ScoredDoc("q", d, 0.0) for d in docnos]})
    q = loaded.encode_queries(["what is a river"])[0]
    expected = loaded.cross(q, torch.from_numpy(reranker.store.lookup(docnos))).tolist()
    assert {d.docno: d.score for d in ranked["q"]} == pytest.approx(dict(zip(docnos, expected)), abs=1e-5)


def test_a_changed_biencoder_is_refused_when_passages_are_encoded(tmp_path):
    model = TwinBert(small(), device="cpu")
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "ranker.json").read_text())
    meta["doc_fingerprint"] = "0" * 64
    (tmp_path / "m" / "ranker.json").write_text(json.dumps(meta))
    with pytest.raises(StoreMismatchError, match="not the one this student was trained against"):
        TwinBert.load(tmp_path / "m", device="cpu").encode_docs(["text"])


def test_an_asymmetric_model_needs_separate_towers_of_the_biencoders_width():
    from ranker.models.config import TwinBertConfig

    with pytest.raises(RankerError, match="asymmetric"):
        TwinBertConfig(doc_encoder="minilm")  # shared_encoder defaults to True
    with pytest.raises(RankerError, match="query vectors have 128 dimensions"):
        TwinBert(TwinBertConfig(doc_encoder="minilm", shared_encoder=False, num_layers=1, proj_dim=128), device="cpu")
    assert small().proj_dim is None and asymmetric_config("minilm", encoder="minilm").proj_dim is None


def test_store_vectors_read_several_stores_and_name_what_is_missing(val_store, train_store, biencoder):
    vectors = StoreVectors([val_store, train_store[0]], biencoder)
    a, b = vectors.stores[0].docnos[0], vectors.stores[1].docnos[0]
    got = vectors([b, a])
    assert torch.equal(got[1], torch.from_numpy(vectors.stores[0].lookup([a])[0]))
    assert torch.equal(got[0], torch.from_numpy(vectors.stores[1].lookup([b])[0]))
    with pytest.raises(RankerError, match="1 passage"):
        vectors([a, "no-such-passage"])
    with pytest.raises(StoreMismatchError):
        StoreVectors([val_store], BiEncoder("minilm", max_length=32, progress=False))


@pytest.mark.slow
def test_alignment_pulls_the_query_tower_to_the_biencoder_and_resumes(data, val_store, tmp_path):
    def config(steps: int) -> AlignConfig:
        return AlignConfig(output=str(tmp_path / "run"), doc_stores=(str(val_store),), doc_encoder="minilm",
                           student=small(), sets=("dl23",), sentences=30, batch_size=16, lr=1e-3, data_dir=str(data),
                           val_depth=VAL_DEPTH, loop=LoopConfig(max_steps=steps, warmup_steps=1, eval_every=4,
                                                                checkpoint_every=4))

    from ranker.train.align import align, alignment_texts

    align(config(4))
    texts = alignment_texts(config(4), set(validation_split(data, scifact=False).validation.queries))
    held = validation_split(data, scifact=False).validation.queries
    assert len(texts) > 73 and not {q.text for q in held.values()} & set(texts)  # dl23's 73 queries, sentences
    assert len(list((tmp_path / "run" / "targets").glob("*/part-*.npz"))) == 1
    model = align(config(8))  # resumes at step 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["event"] == "step"]
    assert [r["step"] for r in log if r["event"] == "resume"] == [4] and len(losses) == 8
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert [p["step"] for p in json.loads((model / "training.json").read_text())["curve"]] == [0, 4, 8]


def test_alignment_can_project_at_the_same_width_and_keep_the_word_embeddings(data, val_store, tmp_path):
    """mpnet's own first layers under mpnet: a ridge-started projection even where the widths agree, and the token
    table kept as the checkpoint has it (here MiniLM over MiniLM, the same code path)."""
    from ranker.train.align import align

    model = align(AlignConfig(output=str(tmp_path / "run"), doc_stores=(str(val_store),), doc_encoder="minilm",
                              student=small(), proj_dim=384, freeze_embeddings=True, loss="cosine", sets=("dl23",),
                              sentences=0, batch_size=8, data_dir=str(data), val_depth=VAL_DEPTH,
                              loop=LoopConfig(max_steps=3, warmup_steps=1, eval_every=3, checkpoint_every=3)))
    trained, start = TwinBert.load(model, device="cpu"), TwinBert(small(), device="cpu")
    assert trained.config.proj_dim == 384 and trained.query_tower.projection is not None
    table = trained.query_tower.encoder.embeddings.word_embeddings.weight
    assert torch.equal(table, start.query_tower.encoder.embeddings.word_embeddings.weight)  # read from the checkpoint
    assert json.loads((model / "ranker.json").read_text())["query_word_embeddings"]["from"] == "minilm"
    layer = next(p for n, p in trained.query_tower.encoder.named_parameters() if "layer.0" in n and "weight" in n)
    start_layer = next(p for n, p in start.query_tower.encoder.named_parameters() if "layer.0" in n and "weight" in n)
    assert not torch.allclose(layer, start_layer.half().float())  # the layers themselves did train


def test_agreement_is_1_for_the_biencoder_itself_and_refuses_a_symmetric_student(biencoder):
    from ranker.train.align import agreement

    texts = ["what is the capital of france", "vaccines", "how long to boil an egg"]
    # all six layers of the same checkpoint, weighted pooling at its start (the mean): the bi-encoder itself
    copy = TwinBert(asymmetric_config("minilm", encoder="minilm", crossing="cos"), device="cpu")
    figures = agreement(copy, texts)
    assert figures["texts"] == 3 and figures["min"] > 0.9999
    assert agreement(TwinBert(small(), device="cpu"), texts)["mean"] < 0.9999  # 1 layer of 6 copies it less
    with pytest.raises(RankerError, match="asymmetric"):
        agreement(TwinBert(TwinBertConfig(num_layers=1), device="cpu"), texts)


@pytest.mark.slow
def test_rank_agreement_counts_only_the_judged_queries(data, tmp_path):
    from .conftest import assert_input_error, rank

    model = TwinBert(asymmetric_config("minilm", encoder="minilm", num_layers=1), device="cpu").save(tmp_path / "m")
    ms, sf = data / "msmarco-passage", data / "beir-scifact"
    printed = rank("agreement", "--model", model, "--topics", sf / "queries.jsonl", "--judged-only",
                   sf / "qrels/test.tsv").stdout
    assert "300 queries, cosine to minilm" in printed  # of the file's 1,109 claims, the 300 test ones
    assert_input_error(rank("agreement", "--model", model, "--topics", ms / "topics/dl19.tsv", "--topics",
                            ms / "topics/dl20.tsv", "--judged-only", ms / "qrels/dl19.txt", check=False),
                       "one each, in order")
    assert_input_error(rank("align", "--output", tmp_path / "run", "--doc-store", tmp_path / "none", "--shard", "0/2",
                            check=False), "--shard splits the target encoding: it goes with --targets-only")


def test_alignment_targets_are_cached_by_text_and_only_new_texts_are_encoded(biencoder, tmp_path):
    from ranker.train.align import encode_targets

    class Counting:
        def __init__(self):
            self.seen: list[str] = []

        def fingerprint(self) -> str:
            return biencoder.fingerprint()

        def encode(self, texts):
            self.seen += texts
            return biencoder.encode(texts)

    first = Counting()
    a = encode_targets(first, ["a cat", "a dog"], tmp_path)
    second = Counting()
    b = encode_targets(second, ["a dog", "a bird", "a cat", "a bird"], tmp_path)
    assert first.seen == ["a cat", "a dog"] and second.seen == ["a bird"]  # cached texts are not encoded again
    assert np.array_equal(b[0], a[1]) and np.array_equal(b[2], a[0]) and np.array_equal(b[1], b[3])
    assert np.allclose(b[1], biencoder.encode(["a bird"])[0], atol=1e-6)

    texts = [f"text number {i}" for i in range(40)]
    shards = [Counting(), Counting()]
    for i, encoder in enumerate(shards):  # two machines, one shared folder
        assert encode_targets(encoder, texts, tmp_path / "shared", shard=(i, 2)) is None
    assert sorted(shards[0].seen + shards[1].seen) == sorted(texts) and shards[0].seen and shards[1].seen
    after = Counting()
    together = encode_targets(after, texts, tmp_path / "shared")
    assert after.seen == [] and np.allclose(together, biencoder.encode(texts), atol=1e-6)


def test_alignment_refuses_a_query_set_that_shares_a_query_with_validation_or_test(data, monkeypatch, tmp_path):
    from ranker.io import datasets
    from ranker.train.align import alignment_texts

    monkeypatch.setattr(datasets, "overlap", lambda name, data_dir: ["1037798"])
    with pytest.raises(RankerError, match="msmarco-train shares 1 queries with a validation or test set"):
        alignment_texts(AlignConfig(output="", doc_stores=(), sets=("dl23",), query_sets=("msmarco-train",),
                                    data_dir=str(data)), set())


def test_alignment_refuses_stores_without_the_validation_candidates(data, train_store, tmp_path):
    from ranker.train.align import align

    with pytest.raises(RankerError, match="in none of the stores"):
        align(AlignConfig(output=str(tmp_path / "run"), doc_stores=(str(train_store[0]),), doc_encoder="minilm",
                          student=small(), sets=("dl23",), sentences=0, data_dir=str(data), val_depth=VAL_DEPTH,
                          loop=LoopConfig(max_steps=1, warmup_steps=1)))


def teacher_run(dev600, qids, folder):
    """A run over the exported candidates of ``qids``: the reverse of the candidates' order."""
    kept = {q: dev600.candidates[q] for q in qids}
    ranking = {q: [ScoredDoc(q, d.docno, float(i)) for i, d in enumerate(docs)] for q, docs in kept.items()}
    write_run(ranking, folder / "teacher.trec", "teacher")
    return folder / "teacher.trec"


def test_teacher_scores_come_from_a_run_over_the_exported_candidates(data, dev600, train_store, tmp_path):
    dev600.write(tmp_path / "export", depth=5)
    exported = read_run(tmp_path / "export" / "msmarco.candidates.trec")
    assert len(exported) == 600 and {len(docs) for docs in exported.values()} == {5}
    qids = train_store[1]
    frame = run_teacher_scores(tmp_path / "scores", {"msmarco": teacher_run(dev600, qids, tmp_path)}, data,
                               sets=("dev600",))
    assert set(frame["qid"]) == set(qids) and len(frame) == 20 * len(qids)
    run = read_run(tmp_path / "teacher.trec")
    assert all(row.score == pytest.approx(next(d.score for d in run[row.qid] if d.docno == row.docno))
               for row in frame.itertuples())
    assert json.loads((tmp_path / "scores" / "ranker.json").read_text())["score_type"] == "run"


@pytest.mark.slow
def test_a_frozen_passage_side_trains_the_query_tower_only(data, dev600, val_store, train_store, tmp_path):
    from ranker.train.distill import distill

    store, qids = train_store
    scores = tmp_path / "scores"
    run_teacher_scores(scores, {"msmarco": teacher_run(dev600, qids, tmp_path)}, data, sets=("dev600",))
    torch.manual_seed(13)
    TwinBert(small(), device="cpu").save(tmp_path / "start")

    def config(name: str, **fields) -> DistillConfig:
        return DistillConfig(output=str(tmp_path / name), scores=str(scores), data_dir=str(data), sets=("dev600",),
                             val_depth=VAL_DEPTH, group_size=4, queries_per_step=2, init=str(tmp_path / "start"),
                             doc_stores=(str(val_store), str(store)),
                             loop=LoopConfig(max_steps=2, warmup_steps=1, eval_every=2, checkpoint_every=2), **fields)

    start = TwinBert.load(tmp_path / "start", device="cpu")
    distill(config("cos"))
    cos = TwinBert.load(tmp_path / "cos" / "checkpoint", device="cpu")  # the last step's weights, float32
    assert cos.fingerprint() == start.fingerprint()  # the passage side cannot move
    weight = "query_tower.encoder.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(cos.state_dict()[weight], start.state_dict()[weight])
    from ranker.models.config import TwinBertConfig

    res = TwinBert.load(distill(config("res", reset_crossing=True,
                                       student=TwinBertConfig(crossing="res", res_width=8))), device="cpu")
    assert res.config.crossing == "res" and res.crossing.w1.out_features == 8
    # student v3's recipe: the borrowed token table stays as it starts, also after head-only warm-up steps
    distill(config("frozen-table", freeze_embeddings=True, head_warmup_steps=1))
    frozen = TwinBert.load(tmp_path / "frozen-table" / "checkpoint", device="cpu").state_dict()
    table = "query_tower.encoder.embeddings.word_embeddings.weight"
    assert torch.equal(frozen[table], start.state_dict()[table]) and not torch.equal(cos.state_dict()[table],
                                                                                    start.state_dict()[table])
    assert not torch.equal(frozen[weight], start.state_dict()[weight])
    with pytest.raises(RankerError, match="in none of the stores"):
        distill(dataclasses_replace(config("lacking"), doc_stores=(str(val_store),)))


def dataclasses_replace(config, **fields):
    import dataclasses

    return dataclasses.replace(config, **fields)


def test_a_shared_encoder_cannot_train_against_a_frozen_passage_side(data, dev600, val_store, train_store, tmp_path):
    from ranker.models.config import TwinBertConfig
    from ranker.train.distill import distill

    store, qids = train_store
    scores = tmp_path / "scores"
    run_teacher_scores(scores, {"msmarco": teacher_run(dev600, qids, tmp_path)}, data, sets=("dev600",))
    with pytest.raises(RankerError, match="separate towers"):
        distill(DistillConfig(output=str(tmp_path / "run"), scores=str(scores), data_dir=str(data), sets=("dev600",),
                              student=TwinBertConfig(num_layers=1), doc_stores=(str(val_store), str(store)),
                              loop=LoopConfig(max_steps=1, warmup_steps=1)))
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def test_cli_exports_distillation_candidates_and_checks_teacher_run_specs(data, tmp_path):
    from .conftest import assert_input_error, rank

    rank("datasets", "distill", "--output", tmp_path / "out", "--sets", "dl23", "--depth", "4", "--data", data)
    run = read_run(tmp_path / "out" / "msmarco.candidates.trec")
    assert len(run) == 73 and max(len(d) for d in run.values()) == 4
    passages = read_collection(tmp_path / "out" / "msmarco.passages.tsv")  # the text of exactly those candidates
    dl23 = read_collection(data / "msmarco-passage/passages/dl23.tsv")
    assert set(passages) == {d.docno for docs in run.values() for d in docs}
    assert all(passages[d].contents == " ".join(dl23[d].contents.split()) for d in passages)
    assert_input_error(rank("distill", "--output", tmp_path / "d", "--scores", tmp_path / "s", "--teacher-run",
                            "no-equals-sign", "--data", data, "--sets", "dl23", check=False),
                       "--teacher-run takes KEY=VALUE")


def test_a_run_can_cap_the_query_length_and_counts_what_it_cut(val_store, tmp_path):
    from ranker.rerank.registry import RerankerConfig, make_reranker

    TwinBert(small(), device="cpu").save(tmp_path / "m")
    long_query = {"q": Query("q", "how long does it take for a river delta to form out of silt and sand")}
    docs = {"q": [ScoredDoc("q", d, 0.0) for d in EmbeddingStore.load(val_store).docnos[:3]]}

    def truncated(cap):
        reranker = make_reranker("twinbert", RerankerConfig(model=str(tmp_path / "m"), store=str(val_store),
                                                            query_backend="torch", query_max_length=cap))
        reranker.rerank(long_query, docs)
        return reranker.config()["queries_truncated"], reranker.model.config.query_max_length

    assert truncated(None) == (0, 32) and truncated(6) == (1, 6)
    capped = tmp_path / "capped"
    TwinBert(small(query_max_length=6), device="cpu").save(capped)
    dense = DenseRetriever(val_store, str(capped), k=3, query_backend="torch")
    dense.transform(long_query | {"short": Query("short", "delta")})
    assert dense.config()["queries_truncated"] == 1 and dense.config()["query_max_length"] == 6


def test_the_projection_starts_at_the_least_squares_map(biencoder):
    from ranker.models.config import TwinBertConfig
    from ranker.train.align import fit_projection

    torch.manual_seed(0)
    model = TwinBert(TwinBertConfig(doc_encoder="minilm", shared_encoder=False, num_layers=1, proj_dim=384),
                     device="cpu")
    texts = [f"{a} {b}" for a in ("rivers", "cats", "tax law", "proteins", "jazz") for b in ("in europe", "facts",
                                                                                             "history", "near me")]
    targets = torch.from_numpy(biencoder.encode(texts))

    def distance() -> float:
        return float((model.encode_queries(texts) - targets).pow(2).sum(-1).mean())

    before = distance()
    fit_projection(model, texts, targets, ridge=1e-3)
    assert distance() < 0.5 * before


TEXTS = ["a short query", "a longer passage about the boiling point of water at altitude and how it changes " * 3, "x"]


def test_the_onnx_biencoder_gives_torchs_vectors_and_int8_encodes_queries_only(biencoder):
    onnx = BiEncoder("minilm", progress=False, backend="onnx", batch_size=2)  # two batches, one padded
    want = biencoder.encode(TEXTS)
    assert np.abs(onnx.encode(TEXTS) - want).max() < 1e-4
    assert onnx.fingerprint() == biencoder.fingerprint()  # a store it builds is the same model's
    int8 = BiEncoder("minilm", progress=False, backend="onnx-int8")
    assert (int8.encode(TEXTS) * want).sum(1).min() > 0.98
    with pytest.raises(RankerError, match="queries only"):
        int8.encode_docs(TEXTS)
    with pytest.raises(RankerError, match="backend must be one of"):
        BiEncoder("minilm", backend="tensorrt")


def test_a_frozen_word_embedding_table_is_read_from_its_checkpoint_not_stored(tmp_path, monkeypatch):
    from safetensors import safe_open

    from ranker.models import hf

    model = TwinBert(asymmetric_config("minilm", encoder="minilm", num_layers=1), device="cpu")
    path = model.save(tmp_path / "student")
    borrowed = json.loads((path / "ranker.json").read_text())["query_word_embeddings"]
    assert borrowed["from"] == "minilm"
    with safe_open(str(path / "query_encoder" / "model.safetensors"), "pt") as f:
        assert hf.WORD_EMBEDDINGS not in f.keys()
    loaded = TwinBert.load(path, device="cpu")
    assert torch.allclose(loaded.encode_queries(TEXTS), model.encode_queries(TEXTS), atol=1e-3)
    assert loaded.query_fingerprint() == model.query_fingerprint()

    with torch.no_grad():
        model.query_tower.encoder.get_input_embeddings().weight[5] += 1.0  # a trained table is the model's own
    trained = model.save(tmp_path / "trained")
    assert "query_word_embeddings" not in json.loads((trained / "ranker.json").read_text())

    table = hf.checkpoint_word_embeddings("minilm")
    monkeypatch.setattr(hf, "checkpoint_word_embeddings", lambda name: table + 1.0)
    with pytest.raises(RankerError, match="SHA-256 differs"):
        TwinBert.load(path)
    monkeypatch.setattr(hf, "checkpoint_word_embeddings", lambda name: None)
    with pytest.raises(RankerError, match="not installed"):
        TwinBert.load(path)
