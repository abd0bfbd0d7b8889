"""Teacher training: fine-tune a cross-encoder on every labelled set (:mod:`ranker.train.examples`' rule).

The model is :class:`ranker.models.cross_encoder.CrossEncoder`; held-out validation queries pick the checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ranker.models.cross_encoder import CrossEncoder
from ranker.rerank.cross_encoder import CrossEncoderReranker
from ranker.train.config import TeacherTrainingConfig
from ranker.train.examples import QueryExamples, TrainSet, ValidationSet, build_trainset
from ranker.train.loop import TrainingRun
from ranker.train.losses import group_loss
from ranker.types import cutoff


def validate(model: CrossEncoder, validation: ValidationSet, texts: Mapping[str, str],
             depth: int = 100) -> dict[str, float]:
    """nDCG@10 per collection of reranking the validation queries' top-``depth`` candidates."""
    reranker = CrossEncoderReranker(texts, model, progress=False)
    return validation.scores(reranker(validation.queries, cutoff(validation.candidates, depth)))


def _group(ex: QueryExamples, loss: str, size: int, rng: random.Random) -> tuple[list[str], list[float]]:
    """Passages of one query's group and their target distribution."""
    def draw(pool: list[str], k: int) -> list[str]:
        return rng.sample(pool, k) if k <= len(pool) else [rng.choice(pool) for _ in range(k)]

    positives = sorted(ex.positives)
    if loss == "softmax":
        docs = [rng.choice(positives), *draw(ex.negatives, size - 1)]
        return docs, [1.0] + [0.0] * (size - 1)
    n_pos = rng.randint(1, min(len(positives), size // 2))
    docs = [*rng.sample(positives, n_pos), *draw(ex.negatives, size - n_pos)]
    gains = [2.0 ** ex.positives.get(d, 0) - 1 for d in docs]
    return docs, [g / sum(gains) for g in gains]


def sample_batch(trainset: TrainSet, config: TeacherTrainingConfig,
                 step: int) -> tuple[list[tuple[str, str]], torch.Tensor]:
    """The pairs of one step and their targets (``queries_per_step x group_size``), seeded by ``(seed, step)``."""
    by_source: dict[str, list[QueryExamples]] = {}
    for ex in trainset.examples:
        by_source.setdefault(ex.source, []).append(ex)
    rng = random.Random(config.loop.step_seed(step))
    pairs: list[tuple[str, str]] = []
    targets: list[list[float]] = []
    for _ in range(config.queries_per_step):
        ex = rng.choice(by_source[rng.choice(sorted(by_source))])
        docs, target = _group(ex, config.loss, config.group_size, rng)
        pairs += [(ex.query, trainset.texts[d]) for d in docs]
        targets.append(target)
    return pairs, torch.tensor(targets)


def train_teacher(config: TeacherTrainingConfig) -> Path:
    """Train a cross-encoder teacher; resumes from ``output/checkpoint`` if present. Returns the fp16 model folder.

    The shipped model (``output/model``) is the checkpoint with the best validation nDCG@10, saved in fp16,
    with the configuration, the training-set counts, the validation curve, pairs seen and wall time as metadata.
    The loop (log, checkpoints, resume, time budget) is :class:`ranker.train.loop.TrainingRun`.
    """
    run = TrainingRun(config.output, config.loop)
    trainset = build_trainset(config.data_dir, config.sets, config.val_fraction, config.loop.seed, config.sparse,
                              scifact_val=config.scifact_val)
    torch.manual_seed(config.loop.seed)
    model = CrossEncoder.from_pretrained(run.checkpoint if run.resuming else config.init, config.model)
    body = [p for n, p in model.named_parameters() if n.startswith("model.")]
    optimizer = torch.optim.AdamW([{"params": body, "lr": config.lr},
                                   {"params": model.head_parameters(), "lr": config.head_lr}], weight_decay=0.01)
    pairs_per_step = config.queries_per_step * config.group_size

    def step(n: int) -> dict:
        pairs, targets = sample_batch(trainset, config, n)
        loss = group_loss(model.logits(pairs, config.micro_batch), targets)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        record = {"loss": round(loss.item(), 4)}
        if model.config.head == "span-cos":
            record["scale"] = round(model.log_scale.exp().item(), 2)
        if model.config.layout == "gated":
            record["segment_bias"] = round(model.segment_bias.mean().item(), 3)
        return record

    def metadata(state: dict) -> dict:
        return {"config": dataclasses.asdict(config), "trainset": trainset.summary(), "curve": state["curve"],
                "pairs_seen": state["step"] * pairs_per_step, "wall_seconds": round(state["elapsed"], 1),
                "best": state["best"], "device": str(model.device)}

    if not run.resuming:
        trainset.validation.write(Path(config.output) / "validation")
        run.log({"event": "start", "config": json.dumps(dataclasses.asdict(config)),
                 "data": json.dumps(trainset.summary()["train"])})
    state = run.fit(model, optimizer, step,
                    lambda: validate(model, trainset.validation, trainset.texts, config.val_depth),
                    lambda path, dtype, meta: model.save(path, dtype, meta), metadata, pairs_per_step)
    return CrossEncoder.from_pretrained(run.best).save(Path(config.output) / "model", torch.float16, metadata(state))
