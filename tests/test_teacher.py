"""Cross-encoder teacher: training lowers the loss, save/load round-trips, scoring is deterministic,
HF sequence-classification cross-encoders load through the same code, and training resumes."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ranker.errors import RankerError  # noqa: E402
from ranker.io.texts import TextSource  # noqa: E402
from ranker.models.biencoder import BiEncoder  # noqa: E402
from ranker.models.config import CrossEncoderConfig  # noqa: E402
from ranker.models.cross_encoder import CrossEncoder  # noqa: E402
from ranker.models.hf import bundled_minilm  # noqa: E402
from ranker.rerank.cross_encoder import CrossEncoderReranker  # noqa: E402
from ranker.train.config import LoopConfig, TeacherTrainingConfig  # noqa: E402
from ranker.train.examples import build_trainset  # noqa: E402
from ranker.train.losses import group_loss  # noqa: E402
from ranker.train.teacher import sample_batch, train_teacher  # noqa: E402
from ranker.types import Query, ScoredDoc  # noqa: E402

PAIRS = [
    ("what is the capital of france", "Paris is the capital and most populous city of France."),
    ("how do vaccines work", "Vaccines train the immune system to recognise a pathogen."),
    ("how do vaccines work", "Paris is the capital and most populous city of France."),
]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module")
def trainset(data):
    return build_trainset(data, sets=("dl20",), val_fraction=0.04)


def test_gated_start_is_the_biencoder():
    model = CrossEncoder.from_pretrained(config=CrossEncoderConfig(layout="gated", segment_bias=-1e4, scale=1.0))
    np.testing.assert_allclose(model.score_pairs(PAIRS), BiEncoder(progress=False).score_pairs(PAIRS), atol=1e-5)


@pytest.mark.parametrize("spec", [CrossEncoderConfig(layout="gated", max_length=64, query_max_length=16),
                                  CrossEncoderConfig(layout="joint", max_length=64),
                                  CrossEncoderConfig(head="cls", layout="joint", max_length=64)])
def test_fine_tuning_lowers_the_loss(trainset, spec):
    torch.manual_seed(0)
    model = CrossEncoder.from_pretrained(config=spec)
    config = TeacherTrainingConfig(output="unused", queries_per_step=2, group_size=4)
    pairs, targets = sample_batch(trainset, config, step=0)
    batch = model.tokenize(pairs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return group_loss(model(batch), targets).item()

    before = loss()
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        group_loss(model(batch), targets).backward()
        optimizer.step()
    assert loss() < before


def test_scoring_is_deterministic():
    model = CrossEncoder.from_pretrained()
    first = model.score_pairs(PAIRS)
    assert np.array_equal(first, model.score_pairs(PAIRS))
    assert np.array_equal(first, CrossEncoder.from_pretrained().score_pairs(PAIRS))


def test_save_then_load_gives_identical_scores(tmp_path):
    model = CrossEncoder.from_pretrained(config=CrossEncoderConfig(layout="gated", segment_bias=-3.0))
    with torch.no_grad():
        model.segment_bias[0, 0] = 1.5  # a trained head must survive the round trip
    loaded = CrossEncoder.from_pretrained(model.save(tmp_path / "fp32", torch.float32, {"note": "test"}))
    assert loaded.config == model.config and loaded.metadata == {"note": "test"}
    assert np.array_equal(loaded.score_pairs(PAIRS), model.score_pairs(PAIRS))
    config = json.loads((tmp_path / "fp32" / "ranker.json").read_text())
    assert (config["type"], config["score_type"], config["head"]) == ("cross-encoder", "logit", "span-cos")

    half = CrossEncoder.from_pretrained(model.save(tmp_path / "fp16"))
    size = {d: (tmp_path / d / "model.safetensors").stat().st_size for d in ("fp16", "fp32")}
    assert size["fp16"] < 0.6 * size["fp32"]
    np.testing.assert_allclose(half.score_pairs(PAIRS), model.score_pairs(PAIRS), atol=0.05)


def test_hf_sequence_classification_folder_loads_with_cls_head(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_pretrained(bundled_minilm(), num_labels=1).eval()
    hf.save_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm())
    tokenizer.save_pretrained(tmp_path)
    model = CrossEncoder.from_pretrained(tmp_path)
    assert model.config.head == "cls"
    enc = tokenizer([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = hf(**enc).logits[:, 0].numpy()
    np.testing.assert_allclose(model.score_pairs(PAIRS), expected, atol=1e-5)

    texts = {"d1": PAIRS[0][1], "d2": PAIRS[1][1]}
    ranking = CrossEncoderReranker(texts, tmp_path, progress=False)(
        {"q": Query("q", PAIRS[0][0])}, {"q": [ScoredDoc("q", "d1", 1.0), ScoredDoc("q", "d2", 2.0)]})
    scores = dict(zip(texts, model.score_pairs([(PAIRS[0][0], t) for t in texts.values()])))
    assert [(d.docno, d.score) for d in ranking["q"]] == sorted(scores.items(), key=lambda x: -x[1])


@pytest.mark.slow
def test_train_teacher_checkpoints_and_resumes(tmp_path, data):
    config = TeacherTrainingConfig(output=str(tmp_path), data_dir=str(data), sets=("dl20",), val_fraction=0.04,
                                   val_depth=5, queries_per_step=1,
                         group_size=4, loop=LoopConfig(max_steps=2, eval_every=1, checkpoint_every=1, warmup_steps=1))
    train_teacher(config)
    config.loop = dataclasses.replace(config.loop, max_steps=3)
    shipped = train_teacher(config)
    events = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events].count("resume") == 1
    assert [e["step"] for e in events if e["event"] == "step"] == [1, 2, 3]
    meta = json.loads((shipped / "ranker.json").read_text())
    training = json.loads((shipped / "training.json").read_text())
    assert meta["dtype"] == "float16" and [p["step"] for p in training["curve"]] == [0, 1, 2, 3]
    assert set(training["curve"][0]["val"]) == {"msmarco"}  # nDCG@10 per validation collection
    held = (tmp_path / "validation" / "msmarco.topics.tsv").read_text().splitlines()
    assert len(held) == round(0.04 * 54)  # the held-out queries, written for rank run / rank ensemble


def test_textsource_names_a_missing_docno(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("a\tfirst\nb\tsecond\r\n")
    texts = TextSource([path])
    assert dict(texts) == {"a": "first", "b": "second"} and "z" not in texts
    with pytest.raises(RankerError, match="'z'"):
        texts["z"]
