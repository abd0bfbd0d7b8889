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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ranker.errors import RankerError
from ranker.io.artifact import read_metadata
from ranker.io.atomic import write_json
from ranker.io.datasets import collection_of
from ranker.models.student import cross_candidates
from ranker.models.twinbert import TwinBert
from ranker.train.config import DistillConfig
from ranker.train.examples import ValidationSet, set_queries, training_labels, validation_split
from ranker.train.frozen import StoreVectors
from ranker.train.loop import TrainingRun
from ranker.train.losses import DISTILLATION_LOSSES, label_loss
from ranker.train.scores import read_scores
from ranker.types import Query, Ranking, cutoff


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
    side): for validation and small sets; scored as :class:`ranker.rerank.twinbert.TwinBertReranker` scores."""
    qids = [q for q in candidates if q in queries]
    docnos = list(dict.fromkeys(d.docno for q in qids for d in candidates[q]))
    q_vecs = model.encode_queries([queries[q].text for q in qids], batch_size)
    d_vecs = vectors(docnos) if vectors else model.encode_docs([texts[d] for d in docnos], batch_size)
    return cross_candidates(model, qids, candidates, q_vecs.numpy(), d_vecs.numpy(),
                            {d: i for i, d in enumerate(docnos)})


def check(config: DistillConfig) -> None:
    """Refuse a configuration that cannot train, before anything is read or written.

    Raises:
        RankerError: An unknown loss, labels asked for without weight, or a frozen passage side with one shared
            encoder (training the query side would change the stored vectors' model).
    """
    if config.loss not in DISTILLATION_LOSSES:
        raise RankerError(f"unknown loss {config.loss!r}; known: {', '.join(DISTILLATION_LOSSES)}")
    if config.loss == "none" and not config.label_weight:
        raise RankerError("loss 'none' trains on labels alone: give it a label weight")
    start = read_metadata(config.init, "twinbert") if config.init else dataclasses.asdict(config.student)
    if config.doc_stores and start.get("shared_encoder", True):
        raise RankerError("a frozen passage side (doc_stores) needs separate towers: the shared encoder "
                          "would change the stored vectors' model")


@dataclass
class TeacherTargets:
    """The teacher's scores to learn, validation queries left out, and the texts they score."""

    queries: dict[str, str]
    texts: dict[str, str]
    scores: dict[str, tuple[list[str], np.ndarray]]
    """``qid -> (docnos, teacher logits)``."""
    validation: ValidationSet
    validation_texts: Mapping[str, str]
    pairs: int
    qids: list[str] = field(init=False)
    """The training queries in sorted order (what each step samples from)."""

    def __post_init__(self) -> None:
        self.qids = sorted(self.scores)

    @classmethod
    def read(cls, config: DistillConfig) -> TeacherTargets:
        """The cached scores of ``config.sets``; the validation split is written under ``config.output``.

        Raises:
            RankerError: No scores for those sets.
        """
        frame = read_scores(config.scores)
        frame = frame[frame["qid"].isin(set_queries(config.data_dir, config.sets))]
        if frame.empty:
            raise RankerError(f"{config.scores}: no teacher scores for the sets {', '.join(config.sets)}")
        collections = set(frame["qid"].map(collection_of))
        split = validation_split(config.data_dir, config.val_fraction, config.loop.seed,
                                 scifact="scifact" in collections)
        validation = split.validation.only(collections)
        validation.write(Path(config.output) / "validation")
        frame = frame[~frame["qid"].isin(validation.queries)]
        return cls(dict(zip(frame["qid"], frame["query"])), dict(zip(frame["docno"], frame["text"])),
                   {qid: (list(g["docno"]), g["score"].to_numpy()) for qid, g in frame.groupby("qid", sort=True)},
                   validation, split.texts, len(frame))


def start_model(config: DistillConfig, run: TrainingRun) -> TwinBert:
    """The student to train: the run's checkpoint when resuming, else ``config.init`` (optionally with a new
    crossing), else a new one of ``config.student``'s architecture."""
    torch.manual_seed(config.loop.seed)
    if run.resuming:
        return TwinBert.load(run.checkpoint)
    if config.init:
        model = TwinBert.load(config.init)
        model.config = dataclasses.replace(model.config, doc_max_length=config.doc_max_length or
                                           model.config.doc_max_length)
        if config.reset_crossing:
            model.reset_crossing(config.student.crossing, config.student.res_width, config.student.cos_scale)
        return model
    return TwinBert(dataclasses.replace(config.student, doc_max_length=config.doc_max_length or
                                        config.student.doc_max_length))


class Distillation:
    """One distillation run's model, optimizer and data: what :meth:`TrainingRun.fit` calls each step, to
    validate and to save."""

    def __init__(self, config: DistillConfig, targets: TeacherTargets, model: TwinBert):
        self.config, self.targets, self.model = config, targets, model
        self.vectors = StoreVectors(config.doc_stores, model) if config.doc_stores else None
        if self.vectors is not None:
            self.vectors(list(targets.texts))  # every training passage must be stored: fail before the first step
        if config.freeze_embeddings:
            model.freeze_query_word_embeddings()
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad and
                   (self.vectors is None or not n.startswith("doc_tower."))]
        head = [p for n, p in trained if ".encoder." not in n]
        self.body = [p for n, p in trained if ".encoder." in n]
        self.optimizer = torch.optim.AdamW([{"params": self.body, "lr": config.lr},
                                            {"params": head, "lr": config.head_lr}], weight_decay=0.01)
        self.loss_fn = DISTILLATION_LOSSES[config.loss]
        self.loss_options = {"temperature": config.temperature} if config.loss in ("kl", "bce") else {}
        self.labels = training_labels(config.data_dir) if config.label_weight else {}

    def logits(self, chosen: list[str], groups: list[list[str]]) -> torch.Tensor:
        """The student's logits ``(queries, group size)`` for the sampled groups."""
        queries, texts = self.targets.queries, self.targets.texts
        if self.vectors is None:
            return self.model([queries[q] for q in chosen], [[texts[d] for d in g] for g in groups])
        d_vecs = self.vectors([d for g in groups for d in g]).view(len(groups), self.config.group_size, -1)
        return self.model.score_vectors([queries[q] for q in chosen], d_vecs.to(self.model.device))

    def step(self, n: int) -> dict:
        """One optimizer step on step ``n``'s sampled groups; the losses as logged."""
        config = self.config
        for p in self.body:
            p.requires_grad_(n >= config.head_warmup_steps)
        chosen, groups, targets = sample_groups(self.targets.scores, self.targets.qids, config, n)
        logits = self.logits(chosen, groups)
        loss = self.loss_fn(logits, targets.to(logits.device), **self.loss_options)
        record = {"loss": round(loss.item(), 4)}
        if config.label_weight:
            grades = torch.tensor([[self.labels.get((q, d), 0) for d in g] for q, g in zip(chosen, groups)])
            labelled = label_loss(logits, grades.to(logits.device))
            loss = loss + config.label_weight * labelled
            record["label_loss"] = round(labelled.item(), 4)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        return record

    def validate(self) -> dict[str, float]:
        validation = self.targets.validation
        return validation.scores(student_ranking(self.model, validation.queries,
                                                 cutoff(validation.candidates, self.config.val_depth),
                                                 self.targets.validation_texts, vectors=self.vectors))

    def metadata(self, state: dict) -> dict:
        """``training.json``: the architecture trained (whether from ``student`` or ``init``), curve, cost."""
        recorded = {**dataclasses.asdict(self.config), "student": dataclasses.asdict(self.model.config)}
        return {"config": recorded, "curve": state["curve"], "best": state["best"],
                "pairs_seen": state["step"] * self.config.queries_per_step * self.config.group_size,
                "wall_seconds": round(state["elapsed"], 1), "training_queries": len(self.targets.qids)}

    def save(self, path: Path, dtype: torch.dtype, meta: dict) -> None:
        self.model.save(path, dtype)
        write_json(path / "training.json", meta)


def distill(config: DistillConfig) -> Path:
    """Train a TwinBERT student on cached teacher scores; resumes from ``output/checkpoint``. Returns the fp16 folder.

    The shipped model (``output/model``) is the checkpoint with the best validation nDCG@10.
    """
    check(config)  # bad input fails before the run folder is made
    targets = TeacherTargets.read(config)
    run = TrainingRun(config.output, config.loop)
    work = Distillation(config, targets, start_model(config, run))
    if not run.resuming:
        run.log({"event": "start", "queries": len(targets.qids), "pairs": targets.pairs})
    state = run.fit(work.model, work.optimizer, work.step, work.validate, work.save, work.metadata,
                    config.queries_per_step * config.group_size)
    final = TwinBert.load(run.best).save(Path(config.output) / "model", torch.float16)
    write_json(final / "training.json", work.metadata(state))
    return final
