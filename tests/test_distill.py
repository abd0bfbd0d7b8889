from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ranker.errors import RankerError
from ranker.io.formats import read_run
from ranker.models.config import TwinBertConfig
from ranker.pipeline import Reranker, pending, rescored
from ranker.train.config import DistillConfig, LoopConfig
from ranker.train.distill import distill
from ranker.train.examples import distill_data
from ranker.train.losses import listwise_kl, margin_mse, soft_bce
from ranker.train.scores import read_scores, score_with_teacher


class PairTeacher(Reranker):
    """A stand-in cross-encoder: a function of (query text, passage text) pairs."""

    name = "cross-encoder"

    def __init__(self, score_pairs, texts):
        self.score_pairs, self.texts = score_pairs, texts

    def rerank(self, queries, candidates):
        docs = pending(queries, candidates)
        return rescored(docs, self.score_pairs([(queries[d.qid].text, self.texts[d.docno]) for d in docs]))


def test_losses_vanish_where_the_student_matches_the_teacher():
    teacher = torch.tensor([[3.0, 1.0, -2.0], [0.5, 0.0, 0.2]])
    assert margin_mse(teacher + 7.0, teacher).item() == pytest.approx(0.0)  # margins ignore a shift
    assert listwise_kl(teacher + 7.0, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert margin_mse(teacher.flip(-1), teacher).item() > 0
    assert listwise_kl(teacher.flip(-1), teacher).item() > 0


def test_soft_bce_pulls_towards_the_teacher_probability():
    student = torch.zeros(1, 2, requires_grad=True)
    soft_bce(student, torch.tensor([[4.0, -4.0]])).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 1]  # descent raises the first logit, lowers the second


@pytest.fixture(scope="module")
def small_data(data):
    return distill_data(data, sets=("dl23", "dev600"), exclude={"9083"})


def test_distill_data_uses_every_candidate_and_respects_exclusions(small_data, data):
    summary = small_data.summary()
    assert summary["dev600"] == {"queries": 599, "pairs": 599 * 20}
    assert summary["dl23"]["queries"] == 73
    assert "9083" not in small_data.queries
    dl19 = {line.split("\t")[0] for line in (data / "msmarco-passage/topics/dl19.tsv").read_text().splitlines()}
    assert not dl19 & set(small_data.queries)
    assert all(d.docno in small_data.texts for docs in small_data.candidates.values() for d in docs)


def test_scifact_ids_are_prefixed(data, tmp_path):
    run = tmp_path / "bm25.scifact-train.trec"
    run.write_text("0 Q0 4983 1 9.0 t\n1 Q0 4983 1 9.0 t\n")  # query 1 is a test query: left out
    d = distill_data(data, sets=("scifact-train",), runs_dir=tmp_path)
    assert list(d.queries) == ["scifact:0"] and d.texts["scifact:4983"].startswith("Microstructural")


def test_teacher_scores_resume_after_an_interruption(small_data, tmp_path):
    def lengths(pairs):
        return np.array([len(q) - len(p) / 100 for q, p in pairs])

    calls = []

    def breaks_after_one_part(pairs):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(pairs))
        return lengths(pairs)

    folder = tmp_path / "scores"
    with pytest.raises(KeyboardInterrupt):
        score_with_teacher(PairTeacher(breaks_after_one_part, small_data.texts), small_data, folder, "len-teacher",
                           queries_per_part=100)
    assert len(read_scores(folder)) == calls[0]
    teacher = PairTeacher(lengths, small_data.texts)
    resumed = score_with_teacher(teacher, small_data, folder, "len-teacher", queries_per_part=100)
    whole = score_with_teacher(teacher, small_data, tmp_path / "whole", "len-teacher", queries_per_part=100)
    key = ["qid", "docno"]
    assert resumed.sort_values(key).reset_index(drop=True).equals(whole.sort_values(key).reset_index(drop=True))
    assert json.loads((folder / "ranker.json").read_text())["score_type"] == "logit"
    with pytest.raises(RankerError, match="scores of teacher 'len-teacher'"):
        score_with_teacher(teacher, small_data, folder, "another-teacher")


def test_a_score_limit_takes_the_first_queries_and_more_can_follow(small_data, tmp_path):
    teacher = PairTeacher(lambda pairs: np.zeros(len(pairs)), small_data.texts)
    first = score_with_teacher(teacher, small_data, tmp_path, "zero-teacher", queries_per_part=2, limit=3)
    assert list(dict.fromkeys(first["qid"])) == list(small_data.queries)[:3]
    more = score_with_teacher(teacher, small_data, tmp_path, "zero-teacher", queries_per_part=2, limit=5)
    assert list(dict.fromkeys(more["qid"])) == list(small_data.queries)[:5]


def test_a_few_distillation_steps_train_and_save(small_data, data, tmp_path):
    def lengths(pairs):
        return np.array([float(len(set(q.split()) & set(p.lower().split()))) for q, p in pairs])

    scores = tmp_path / "scores"
    score_with_teacher(PairTeacher(lengths, small_data.texts), small_data, scores, "overlap-teacher")
    config = DistillConfig(output=str(tmp_path / "run"), scores=str(scores), data_dir=str(data), val_depth=5,
                           student=TwinBertConfig(num_layers=1), doc_max_length=64, group_size=4, queries_per_step=2,
                           label_weight=0.5,
                           loop=LoopConfig(max_steps=3, warmup_steps=1, eval_every=3, checkpoint_every=3))
    model = distill(config)
    meta = json.loads((model / "training.json").read_text())
    assert [p["step"] for p in meta["curve"]] == [0, 3] and meta["pairs_seen"] == 3 * 2 * 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["label_loss"]) for r in log if r["event"] == "step")
    assert json.loads((model / "ranker.json").read_text())["dtype"] == "float16"
    assert (tmp_path / "run" / "validation" / "msmarco.qrels.txt").stat().st_size > 0


def test_a_student_can_start_from_another_and_train_on_some_sets(small_data, data, tmp_path):
    from ranker.models.twinbert import TwinBert

    scores = tmp_path / "scores"
    score_with_teacher(PairTeacher(lambda pairs: np.arange(len(pairs), dtype=float), small_data.texts), small_data,
                       scores, "index-teacher")
    loop = LoopConfig(max_steps=1, warmup_steps=1, eval_every=1, checkpoint_every=1)
    first = distill(DistillConfig(output=str(tmp_path / "a"), scores=str(scores), data_dir=str(data), val_depth=3,
                                  student=TwinBertConfig(num_layers=1), doc_max_length=32, group_size=2,
                                  queries_per_step=2,
                                  loop=loop))
    # no learning: the second student must hold exactly the first one's weights
    second = distill(DistillConfig(output=str(tmp_path / "b"), scores=str(scores), data_dir=str(data), val_depth=3,
                                   init=str(first), sets=("dl23",), student=TwinBertConfig(num_layers=2),
                                   doc_max_length=48,
                                   group_size=2, queries_per_step=2, lr=0.0, head_lr=0.0, loop=loop))
    a, b = TwinBert.load(first), TwinBert.load(second)
    assert b.config.num_layers == 1 and b.config.doc_max_length == 48
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert json.loads((second / "training.json").read_text())["training_queries"] == 73  # dl23's, not dev600's
    with pytest.raises(RankerError, match="no teacher scores for the sets scifact-train"):
        distill(DistillConfig(output=str(tmp_path / "c"), scores=str(scores), data_dir=str(data),
                              sets=("scifact-train",), loop=loop))
    with pytest.raises(RankerError, match="no such file or folder"):
        distill(DistillConfig(output=str(tmp_path / "d"), scores=str(scores), data_dir=str(data),
                              init=str(tmp_path / "nothing"), loop=loop))
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()  # bad input makes no run folder


def test_a_scifact_only_student_is_validated_on_scifact_alone(data, tmp_path):
    from .conftest import ROOT

    scifact = distill_data(data, sets=("scifact-train",), runs_dir=ROOT / "runs")
    scores = tmp_path / "scores"
    score_with_teacher(PairTeacher(lambda pairs: np.arange(len(pairs), dtype=float), scifact.texts), scifact, scores,
                       "index-teacher", limit=4)
    model = distill(DistillConfig(output=str(tmp_path / "run"), scores=str(scores), data_dir=str(data), val_depth=2,
                                  sets=("scifact-train",), student=TwinBertConfig(num_layers=1), doc_max_length=32,
                                  group_size=2, queries_per_step=2,
                                  loop=LoopConfig(max_steps=1, warmup_steps=1, eval_every=1, checkpoint_every=1)))
    curve = json.loads((model / "training.json").read_text())["curve"]
    assert [set(point["val"]) for point in curve] == [{"scifact"}, {"scifact"}]
    assert sorted(p.name for p in (tmp_path / "run" / "validation").iterdir()) == [
        "scifact.bm25.trec", "scifact.qrels.txt", "scifact.topics.tsv"]


@pytest.mark.slow
def test_head_warmup_leaves_the_encoder_untouched(small_data, data, tmp_path):
    from ranker.models.twinbert import TwinBert

    scores = tmp_path / "scores"
    score_with_teacher(PairTeacher(lambda pairs: np.arange(len(pairs), dtype=float), small_data.texts), small_data,
                       scores, "index-teacher")

    def trained(warmup: int) -> dict:
        config = DistillConfig(output=str(tmp_path / f"run{warmup}"), scores=str(scores), data_dir=str(data),
                               val_depth=3, student=TwinBertConfig(num_layers=1), doc_max_length=32, group_size=2,
                               queries_per_step=2, head_warmup_steps=warmup,
                               loop=LoopConfig(max_steps=2, warmup_steps=1, eval_every=2, checkpoint_every=2))
        distill(config)
        return TwinBert.load(tmp_path / f"run{warmup}" / "checkpoint").state_dict()  # the last step, float32

    frozen, tuned = trained(2), trained(1)
    torch.manual_seed(13)  # distill's seed: the same starting weights
    fresh = TwinBert(TwinBert.load(tmp_path / "run2" / "checkpoint").config).state_dict()
    encoder = [k for k in fresh if ".encoder." in k and k.endswith("query.weight")]
    assert encoder and all(torch.equal(frozen[k], fresh[k]) for k in encoder)
    assert not any(torch.equal(tuned[k], fresh[k]) for k in encoder)
    assert not torch.equal(frozen["crossing.out.weight"], fresh["crossing.out.weight"])


def test_distill_command_scores_with_an_ensemble_teacher(data, tmp_path):
    """--teacher takes an ensemble description; here BM25 alone (identity), on dev600's scored candidates."""
    from .conftest import rank

    spec = tmp_path / "bm25-only.json"
    spec.write_text(json.dumps({"components": [{"reranker": "identity"}], "weights": [1.0]}))
    scores = tmp_path / "scores"
    rank("distill", "--score-only", "--teacher", spec, "--sets", "dev600", "--data", data, "--scores", scores,
         "--output", tmp_path / "run")
    frame = read_scores(scores)
    assert frame["qid"].nunique() == 600 and json.loads((scores / "ranker.json").read_text())["score_type"] == "fused-z"
    z = frame.groupby("qid")["score"].agg(["mean", "std"])
    assert (z["mean"].abs() < 1e-4).all() and ((z["std"] - 1).abs() < 0.1).all()  # BM25 scores, z-normalised
    candidates = read_run(data / "msmarco-passage/dev600/candidates.trec")
    qid = frame["qid"].iloc[0]
    first = frame[frame["qid"] == qid].sort_values("score", ascending=False)["docno"].iloc[0]
    assert first == candidates[qid][0].docno


@pytest.mark.slow
def test_distill_command_can_train_on_the_cache_as_it_is(small_data, data, tmp_path):
    """--cached-only never builds the teacher (here a missing folder) and trains on the queries already scored."""
    from .conftest import rank

    scores = tmp_path / "scores"
    score_with_teacher(PairTeacher(lambda pairs: np.arange(len(pairs), dtype=float), small_data.texts), small_data,
                       scores, "index-teacher")
    run = tmp_path / "run"
    rank("distill", "--cached-only", "--teacher", tmp_path / "no-such-teacher", "--scores", scores, "--data", data,
         "--output", run, "--num-layers", 1, "--doc-max-length", 32, "--max-steps", 1, "--eval-every", 1,
         "--queries-per-step", 2, "--group-size", 2, "--val-depth", 3)
    meta = json.loads((run / "model" / "training.json").read_text())
    assert meta["training_queries"] == len(small_data.queries) and meta["pairs_seen"] == 4


@pytest.mark.slow
def test_distill_stopped_by_sigterm_resumes_from_its_checkpoint(small_data, data, tmp_path):
    import signal

    from .conftest import rank
    from .test_interrupts import assert_interrupted, start, stop_once

    scores = tmp_path / "scores"
    score_with_teacher(PairTeacher(lambda pairs: np.arange(len(pairs), dtype=float), small_data.texts), small_data,
                       scores, "index-teacher")
    run = tmp_path / "run"
    args = ("distill", "--cached-only", "--scores", scores, "--data", data, "--output", run, "--num-layers", 1,
            "--doc-max-length", 32, "--max-steps", 40, "--eval-every", 2, "--queries-per-step", 2, "--group-size", 2,
            "--val-depth", 3)
    process = start(*args)
    output = stop_once(process, "event=step step=3 ", signal.SIGTERM)  # step 3 begins after the step-2 checkpoint
    assert process.returncode == 143
    assert_interrupted(output, "SIGTERM")
    assert not (run / "model").exists()
    rank(*args)
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    resumed = [e["step"] for e in events if e["event"] == "resume"]
    assert len(resumed) == 1 and resumed[0] >= 2
    assert [e["step"] for e in events if e["event"] == "step"][-1] == 40
    assert json.loads((run / "model" / "training.json").read_text())["pairs_seen"] == 40 * 4


def test_scifact_validation_queries_are_never_distilled_on(data):
    from ranker.train.examples import validation_split

    held = set(validation_split(data, scifact=True).validation.queries)
    d = distill_data(data, sets=("scifact-train",), exclude=held, runs_dir=Path(__file__).parents[1] / "runs")
    assert sum(q.startswith("scifact:") for q in held) == 50
    assert len(d.queries) == 809 - 50 and not held & set(d.queries)


def test_label_loss_prefers_the_graded_positive_and_skips_groups_without_one():
    from ranker.train.losses import label_loss

    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]], requires_grad=True)
    grades = torch.tensor([[3, 0, 1], [0, 0, 0]])  # grade 1 is no positive; the second group has none
    loss = label_loss(logits, grades)
    assert loss.item() == pytest.approx(-torch.tensor([2.0, 0.0, 0.0]).log_softmax(-1)[0].item())
    loss.backward()
    assert logits.grad[0, 0] < 0 and torch.all(logits.grad[1] == 0)


def test_training_labels_cover_every_labelled_set(data):
    from ranker.train.examples import training_labels

    labels = training_labels(data)
    assert labels[("scifact:0", "scifact:31715818")] == 2
    assert {q for q, _ in labels} >= {"scifact:0"} and len(labels) > 10_000
