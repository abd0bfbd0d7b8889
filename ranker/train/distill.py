"""Distillation: the TwinBERT student learns to reproduce the cross-encoder teacher's scores.

Distillation needs no labels, so every query with candidates is training data
(:func:`ranker.train.examples.distill_data`): DL20–DL22 with the union of every first-stage run of those years,
DL23's judged pools, dev600's BM25 top-20 and SciFact train with the project's BM25 candidates. DL19 and SciFact
test are never used; the teacher's validation queries (a quarter of DL20/DL21) are left out here too and pick
the student's checkpoint. The teacher's scores are cached first (:mod:`ranker.train.scores`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ranker.errors import RankerError
from ranker.io.artifact import read_metadata
from ranker.io.atomic import write_json
from ranker.io.datasets import collection_of
from ranker.rerank.twinbert import TwinBert
from ranker.train.config import DistillConfig
from ranker.train.examples import set_queries, training_labels, validation_split
from ranker.train.frozen import StoreVectors
from ranker.train.loop import TrainingRun
from ranker.train.losses import DISTILLATION_LOSSES, label_loss
from ranker.train.scores import read_scores
from ranker.types import Query, Ranking, ScoredDoc, cutoff


def sample_groups(scores: Mapping[str, tuple[list[str], np.ndarray]], qids: Sequence[str], config: DistillConfig,
                  step: int) -> tuple[list[str], list[list[str]], torch.Tensor]:
    """One step's queries, their candidate groups and the teacher's logits for them, seeded by ``(seed, step)``."""
    rng = random.Random(config.loop.step_seed(step))
    chosen, groups, targets = [], [], []
    for qid in rng.sample(list(qids), min(config.queries_per_step, len(qids))):
        docnos, logits = scores[qid]
        order = np.argsort(-logits, kind="stable")
        head, tail = list(order[:config.top_pool]), list(order[config.top_pool:]) or list(order)
        half = config.group_size // 2
        picks = [*(rng.sample(head, half) if len(head) >= half else rng.choices(head, k=half)),
                 *(rng.sample(tail, config.group_size - half) if len(tail) >= config.group_size - half
                   else rng.choices(tail, k=config.group_size - half))]
        chosen.append(qid)
        groups.append([docnos[i] for i in picks])
        targets.append([float(logits[i]) for i in picks])
    return chosen, groups, torch.tensor(targets)


def student_ranking(model, queries: Mapping[str, Query], candidates: Ranking, texts: Mapping[str, str] | None,
                    batch_size: int = 64, vectors: StoreVectors | None = None) -> Ranking:
    """Rerank with a TwinBERT encoding passages on the fly, or reading them from ``vectors`` (a frozen passage
    side): for validation and small sets."""
    qids = [q for q in candidates if q in queries]
    docnos = list(dict.fromkeys(d.docno for q in qids for d in candidates[q]))
    q_vecs = model.encode_queries([queries[q].text for q in qids], batch_size)
    d_vecs = vectors(docnos) if vectors else model.encode_docs([texts[d] for d in docnos], batch_size)
    row = {d: i for i, d in enumerate(docnos)}
    ranking: Ranking = {}
    with torch.inference_mode():
        for i, qid in enumerate(qids):
            idx = torch.tensor([row[d.docno] for d in candidates[qid]])
            logits = model.cross(q_vecs[i].to(model.device), d_vecs[idx].to(model.device)).cpu().tolist()
            ranking[qid] = [ScoredDoc(qid, d.docno, float(s)) for d, s in zip(candidates[qid], logits)]
    return ranking


def distill(config: DistillConfig) -> Path:
    """Train a TwinBERT student on cached teacher scores; resumes from ``output/checkpoint``. Returns the fp16 folder.

    The shipped model (``output/model``) is the checkpoint with the best validation nDCG@10.
    """
    if config.loss not in DISTILLATION_LOSSES:
        raise RankerError(f"unknown loss {config.loss!r}; known: {', '.join(DISTILLATION_LOSSES)}")
    if config.loss == "none" and not config.label_weight:
        raise RankerError("loss 'none' trains on labels alone: give it a label weight")
    if config.threads:
        torch.set_num_threads(config.threads)
    frame = read_scores(config.scores)
    frame = frame[frame["qid"].isin(set_queries(config.data_dir, config.sets))]
    if frame.empty:
        raise RankerError(f"{config.scores}: no teacher scores for the sets {', '.join(config.sets)}")
    # bad input fails before the run folder is made: a folder that is no student, a shared encoder to freeze
    start = read_metadata(config.init, "twinbert") if config.init else dataclasses.asdict(config.student)
    if config.doc_stores and start.get("shared_encoder", True):
        raise RankerError("a frozen passage side (doc_stores) needs separate towers: the shared encoder "
                          "would change the stored vectors' model")
    run = TrainingRun(config.output, config.loop)
    collections = set(frame["qid"].map(collection_of))
    trainset = validation_split(config.data_dir, config.val_fraction, config.loop.seed,
                                scifact="scifact" in collections)
    validation, val_texts = trainset.validation.only(collections), trainset.texts
    validation.write(Path(config.output) / "validation")
    frame = frame[~frame["qid"].isin(validation.queries)]
    texts = dict(zip(frame["docno"], frame["text"]))
    queries = dict(zip(frame["qid"], frame["query"]))
    scores = {qid: (list(g["docno"]), g["score"].to_numpy()) for qid, g in frame.groupby("qid", sort=True)}
    qids = sorted(scores)

    torch.manual_seed(config.loop.seed)
    if run.resuming:
        model = TwinBert.load(run.checkpoint)
    elif config.init:
        model = TwinBert.load(config.init)
        model.config = dataclasses.replace(model.config, doc_max_length=config.doc_max_length or
                                           model.config.doc_max_length)
        if config.reset_crossing:
            model.reset_crossing(config.student.crossing, config.student.res_width, config.student.cos_scale)
    else:
        model = TwinBert(dataclasses.replace(config.student, doc_max_length=config.doc_max_length or
                                             config.student.doc_max_length))
    vectors = StoreVectors(config.doc_stores, model) if config.doc_stores else None
    if vectors is not None:
        vectors(list(texts))  # every training passage must be stored: fail before the first step
    trained = [(n, p) for n, p in model.named_parameters() if vectors is None or not n.startswith("doc_tower.")]
    head = [p for n, p in trained if ".encoder." not in n]
    body = [p for n, p in trained if ".encoder." in n]
    optimizer = torch.optim.AdamW([{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
                                  weight_decay=0.01)
    loss_fn = DISTILLATION_LOSSES[config.loss]
    kwargs = {"temperature": config.temperature} if config.loss in ("kl", "bce") else {}
    labels = training_labels(config.data_dir) if config.label_weight else {}

    def step(n: int) -> dict:
        for p in body:
            p.requires_grad_(n >= config.head_warmup_steps)
        chosen, groups, targets = sample_groups(scores, qids, config, n)
        if vectors is None:
            logits = model([queries[q] for q in chosen], [[texts[d] for d in g] for g in groups])
        else:
            d_vecs = vectors([d for g in groups for d in g]).view(len(groups), config.group_size, -1)
            logits = model.score_vectors([queries[q] for q in chosen], d_vecs.to(model.device))
        loss = loss_fn(logits, targets.to(logits.device), **kwargs)
        record = {"loss": round(loss.item(), 4)}
        if config.label_weight:
            grades = torch.tensor([[labels.get((q, d), 0) for d in g] for q, g in zip(chosen, groups)])
            labelled = label_loss(logits, grades.to(logits.device))
            loss = loss + config.label_weight * labelled
            record["label_loss"] = round(labelled.item(), 4)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return record

    def validate() -> dict[str, float]:
        return validation.scores(student_ranking(model, validation.queries,
                                                 cutoff(validation.candidates, config.val_depth), val_texts,
                                                 vectors=vectors))

    def metadata(state: dict) -> dict:
        # the architecture trained, whether from ``student`` or from ``init``
        recorded = {**dataclasses.asdict(config), "student": dataclasses.asdict(model.config)}
        return {"config": recorded, "curve": state["curve"], "best": state["best"],
                "pairs_seen": state["step"] * config.queries_per_step * config.group_size,
                "wall_seconds": round(state["elapsed"], 1), "training_queries": len(qids)}

    def save(path: Path, dtype: torch.dtype, meta: dict) -> None:
        model.save(path, dtype)
        write_json(path / "training.json", meta)

    if not run.resuming:
        run.log({"event": "start", "queries": len(qids), "pairs": len(frame)})
    state = run.fit(model, optimizer, step, validate, save, metadata, config.queries_per_step * config.group_size)
    best = TwinBert.load(run.best)
    final = best.save(Path(config.output) / "model", torch.float16)
    write_json(final / "training.json", metadata(state))
    return final
