"""Query-tower alignment: an asymmetric TwinBERT's small query tower learns to put a text where its bi-encoder does.

The student's passage side *is* the bi-encoder (all-mpnet-base-v2, frozen, read from its store), so a query tower
that reproduces the bi-encoder's query vectors ranks as the bi-encoder does at MiniLM's cost per query. Training
texts are short, like queries: every distillation query (never DL19, SciFact test or the validation queries) and
one sentence from each of ``sentences`` passages drawn from the distillation pools. Their bi-encoder vectors are
computed once and cached in ``output/targets/`` (parts written atomically: an interrupted encoding resumes).
Loss: the squared distance between the tower's vector and the bi-encoder's unit vector (direction and length:
the residual crossing reads both). The projection starts at the least-squares (ridge) map from the pretrained
query encoder's pooled vectors to the targets, so step 0 already ranks with what the encoder knows. The
checkpoint is picked by validation nDCG@10, reranking the validation queries' candidates against the stored
vectors; :func:`ranker.train.distill.distill` then fine-tunes on teacher scores from this start (``init``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ranker.io.atomic import atomic_open, write_json
from ranker.io.datasets import collection_of
from ranker.rerank.biencoder import BiEncoder
from ranker.rerank.twinbert import TwinBert, asymmetric_config
from ranker.train.config import AlignConfig
from ranker.train.distill import student_ranking
from ranker.train.examples import distill_data, validation_split
from ranker.train.frozen import StoreVectors
from ranker.train.loop import TrainingRun
from ranker.types import cutoff

SENTENCE = re.compile(r"(?<=[.!?])\s+")
QUERY_SIDE = ("encoder", "num_layers", "pooling", "crossing", "res_width", "cos_scale", "query_max_length")
"""The student fields alignment takes from :attr:`AlignConfig.student`; the rest follow the bi-encoder."""
TARGET_PART = 1024


def alignment_texts(config: AlignConfig, exclude: set[str]) -> list[str]:
    """The training texts: distillation queries, then one 4–40-word sentence from each passage drawn."""
    data = distill_data(config.data_dir, config.sets, exclude=exclude)
    passages: dict[str, list[str]] = {}
    for docno, text in data.texts.items():
        passages.setdefault(collection_of(docno), []).append(text)
    rng = random.Random(config.loop.seed)
    drawn = []
    for name in sorted(passages):
        pool = passages[name]
        for text in rng.sample(pool, min(len(pool), config.sentences // len(passages))):
            sentences = [s for s in SENTENCE.split(text) if 4 <= len(s.split()) <= 40]
            if sentences:
                drawn.append(rng.choice(sentences))
    return list(dict.fromkeys([q.text for q in data.queries.values()] + drawn))


def encode_targets(encoder: BiEncoder, texts: list[str], folder: Path) -> np.ndarray:
    """The bi-encoder's vectors of ``texts``, cached in ``folder`` (``texts.json`` and atomic ``part-*.npy``)."""
    folder.mkdir(parents=True, exist_ok=True)
    listing = folder / "texts.json"
    if not listing.is_file() or json.loads(listing.read_text()) != texts:
        for part in folder.glob("part-*.npy"):
            part.unlink()
        write_json(listing, texts)
    starts = range(0, len(texts), TARGET_PART)
    for n, start in enumerate(tqdm(starts, desc="targets", unit="part")):
        part = folder / f"part-{n:05d}.npy"
        if not part.is_file():
            with atomic_open(part, "wb") as f:
                np.save(f, encoder.encode(texts[start:start + TARGET_PART]))
    return np.concatenate([np.load(folder / f"part-{n:05d}.npy") for n in range(len(starts))])


@torch.inference_mode()
def fit_projection(model: TwinBert, texts: list[str], targets: torch.Tensor, ridge: float = 1.0,
                   batch_size: int = 128) -> None:
    """Start the query projection at the ridge-regression map from the pooled query-encoder vectors of ``texts``
    to their targets (through ``atanh``, the projection's ``tanh`` undone), instead of at random."""
    tower, was_training = model.query_tower, model.training
    model.eval()
    pooled = torch.cat([tower(texts[i:i + batch_size], model.config.query_max_length, project=False).double().cpu()
                        for i in range(0, len(texts), batch_size)])
    model.train(was_training)
    projection = tower.projection
    x = torch.cat([pooled, torch.ones(len(texts), 1, dtype=torch.float64)], 1)
    y = torch.atanh(targets.double().clamp(-0.999, 0.999))
    solution = torch.linalg.solve(x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)
    projection.weight.copy_(solution[:-1].T.float())
    projection.bias.copy_(solution[-1].float())


def align(config: AlignConfig) -> Path:
    """Train the query tower on the bi-encoder's vectors; resumes from ``output/checkpoint``. Returns the fp16
    folder (``output/model``: the checkpoint with the best validation nDCG@10)."""
    if config.threads:
        torch.set_num_threads(config.threads)
    run = TrainingRun(config.output, config.loop)
    trainset = validation_split(config.data_dir, config.val_fraction, config.loop.seed,
                                scifact=any(s.startswith("scifact") for s in config.sets))
    validation = trainset.validation
    validation.write(Path(config.output) / "validation")
    texts = alignment_texts(config, set(validation.queries))

    torch.manual_seed(config.loop.seed)
    student = asymmetric_config(config.doc_encoder,
                                **{k: getattr(config.student, k) for k in QUERY_SIDE})
    model = TwinBert.load(run.checkpoint) if run.resuming else TwinBert(student)
    targets = torch.from_numpy(encode_targets(model.doc_encoder, texts, Path(config.output) / "targets"))
    if model.query_tower.projection is not None and not run.resuming:
        fit_projection(model, texts, targets)
    vectors = StoreVectors(config.doc_stores, model)
    vectors(list(dict.fromkeys(d.docno for docs in cutoff(validation.candidates, config.val_depth).values()
                               for d in docs)))  # every validation candidate must be stored: fail now
    head = [p for n, p in model.named_parameters() if ".encoder." not in n]
    body = [p for n, p in model.named_parameters() if ".encoder." in n]
    optimizer = torch.optim.AdamW([{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
                                  weight_decay=0.01)

    def step(n: int) -> dict:
        rows = random.Random(config.loop.step_seed(n)).sample(range(len(texts)), config.batch_size)
        q = model.query_tower([texts[i] for i in rows], model.config.query_max_length)
        loss = (q - targets[rows].to(q.device)).pow(2).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return {"loss": round(loss.item(), 4)}

    def validate() -> dict[str, float]:
        return validation.scores(student_ranking(model, validation.queries,
                                                 cutoff(validation.candidates, config.val_depth), None,
                                                 vectors=vectors))

    def metadata(state: dict) -> dict:
        return {"config": {**dataclasses.asdict(config), "student": dataclasses.asdict(model.config)},
                "curve": state["curve"], "best": state["best"], "texts": len(texts),
                "texts_seen": state["step"] * config.batch_size, "wall_seconds": round(state["elapsed"], 1)}

    def save(path: Path, dtype: torch.dtype, meta: dict) -> None:
        model.save(path, dtype)
        write_json(path / "training.json", meta)

    if not run.resuming:
        run.log({"event": "start", "texts": len(texts)})
    state = run.fit(model, optimizer, step, validate, save, metadata, config.batch_size)
    final = TwinBert.load(run.best).save(Path(config.output) / "model", torch.float16)
    write_json(final / "training.json", metadata(state))
    return final
