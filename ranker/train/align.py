"""Query-tower alignment: an asymmetric TwinBERT's small query tower learns to put a text where its bi-encoder does.

The student's passage side *is* the bi-encoder (all-mpnet-base-v2, frozen, read from its store), so a query tower
that reproduces the bi-encoder's query vectors ranks as the bi-encoder does at MiniLM's cost per query. Training
texts are short, like queries: every distillation query (never DL19, SciFact test or the validation queries) and the
queries of text-only sets (``msmarco-train``: 48,794 MS MARCO training queries, checked for overlap with every
validation and test query), and one sentence from each of ``sentences`` passages drawn from the distillation pools.
Their bi-encoder vectors are computed once and cached by text hash (``targets``, default ``output/targets/``; parts
written atomically: an interrupted encoding resumes, and runs can share one cache). Loss (``loss``): ``mse``, the
squared distance between the tower's vector and the bi-encoder's unit vector (direction and length: the residual
crossing reads both), or ``cosine``, ``1 - cos`` (direction alone: all the cosine crossing reads; a tower cut from
the bi-encoder's own first layers has no projection, and its raw pooled vectors are far from unit length, which
``mse`` would spend its gradient on). The projection starts at the least-squares (ridge) map from the pretrained
query encoder's pooled vectors to the targets, so step 0 already ranks with what the encoder knows. The checkpoint
is picked by validation nDCG@10, reranking the validation queries' candidates against the stored vectors;
:func:`ranker.train.distill.distill` then fine-tunes on teacher scores from this start (``init``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.io import datasets
from ranker.io.atomic import atomic_open, write_json
from ranker.models.biencoder import BiEncoder
from ranker.models.hf import auto_device
from ranker.models.twinbert import TwinBert, asymmetric_config
from ranker.store.embeddings import text_hash
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
    """The training texts: distillation queries, the queries of :attr:`AlignConfig.query_sets` (text alone), then
    one 4–40-word sentence from each passage drawn.

    Raises:
        RankerError: A query set shares a query (by id or normalised text) with a validation or test set.
    """
    data = distill_data(config.data_dir, config.sets, exclude=exclude)
    extra = []
    for name in config.query_sets:
        if leaked := datasets.overlap(name, config.data_dir):
            raise RankerError(f"{name} shares {len(leaked)} queries with a validation or test set "
                              f"(first: {leaked[0]}): not an alignment set")
        extra += [q.text for q in datasets.load(name, config.data_dir, use="align").queries().values()]
    passages: dict[str, list[str]] = {}
    for docno, text in data.texts.items():
        passages.setdefault(datasets.collection_of(docno), []).append(text)
    rng = random.Random(config.loop.seed)
    drawn = []
    for name in sorted(passages):
        pool = passages[name]
        for text in rng.sample(pool, min(len(pool), config.sentences // len(passages))):
            sentences = [s for s in SENTENCE.split(text) if 4 <= len(s.split()) <= 40]
            if sentences:
                drawn.append(rng.choice(sentences))
    return list(dict.fromkeys([q.text for q in data.queries.values()] + extra + drawn))


def text_key(text: str) -> str:
    """The cache key of a text: the store's text hash (:func:`ranker.store.embeddings.text_hash`), hex."""
    return text_hash(text).hex()


def encode_targets(encoder: BiEncoder, texts: list[str], folder: Path,
                   shard: tuple[int, int] | None = None) -> np.ndarray | None:
    """The bi-encoder's vectors of ``texts``, cached by text hash under ``folder/<encoder fingerprint>/`` in atomic
    ``part-*.npz`` files (``keys``, ``vectors``; each named by a hash of its keys): an interrupted encoding resumes,
    a run with more texts encodes only the new ones, and runs may share one cache. With ``shard = (i, n)`` only the
    missing texts whose hash is ``i`` modulo ``n`` are encoded and nothing is returned: ``n`` machines writing into
    one shared folder fill it together."""
    folder = folder / encoder.fingerprint()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    cached: dict[str, np.ndarray] = {}
    for part in sorted(folder.glob("part-*.npz")):
        with np.load(part) as saved:
            cached.update(zip(saved["keys"].tolist(), saved["vectors"]))
    keys = [text_key(t) for t in texts]
    missing = [(k, t) for k, t in dict(zip(keys, texts)).items() if k not in cached
               and (shard is None or int(k[:8], 16) % shard[1] == shard[0])]
    for start in tqdm(range(0, len(missing), TARGET_PART), desc="targets", unit="part"):
        chunk = missing[start:start + TARGET_PART]
        vectors = encoder.encode([t for _, t in chunk])
        name = hashlib.blake2b("".join(k for k, _ in chunk).encode(), digest_size=8).hexdigest()
        with atomic_open(folder / f"part-{name}.npz", "wb") as f:
            np.savez(f, keys=np.array([k for k, _ in chunk]), vectors=vectors)
        cached.update(zip((k for k, _ in chunk), vectors))
    return None if shard is not None else np.stack([cached[k] for k in keys])


def target_encoder(name: str, device: str | None = None) -> BiEncoder:
    """The bi-encoder ``name`` that computes an asymmetric student's targets: on a CPU its ONNX Runtime graph (the
    same vectors to 1e-3, checked at export, about twice as fast)."""
    cpu = auto_device(device).type == "cpu"
    return BiEncoder(name, device=device, progress=False, backend="onnx" if cpu else "torch")


def alignment_targets(config: AlignConfig, shard: tuple[int, int] | None = None) -> Path:
    """Encode the alignment targets of ``config`` (or one shard of them, :func:`encode_targets`) into its target
    cache and stop there; returns the cache folder."""
    trainset = validation_split(config.data_dir, config.val_fraction, config.loop.seed,
                                scifact=any(s.startswith("scifact") for s in config.sets))
    folder = Path(config.targets or Path(config.output) / "targets")
    encode_targets(target_encoder(config.doc_encoder), alignment_texts(config, set(trainset.validation.queries)),
                   folder, shard or (0, 1))
    return folder


@torch.inference_mode()
def agreement(model: TwinBert, texts: list[str], batch_size: int = 64) -> dict[str, float]:
    """How closely an asymmetric student's query tower copies its bi-encoder on ``texts``: the mean, 5th percentile
    and minimum cosine between the two vectors of each text."""
    if not model.config.doc_encoder:
        raise RankerError("agreement compares an asymmetric student's query tower with its bi-encoder; this model "
                          "has a document tower of its own")
    mine = model.encode_queries(texts, batch_size).double().numpy()
    theirs = model.doc_encoder.encode(texts).astype(np.float64)
    cos = (mine * theirs).sum(1) / np.linalg.norm(mine, axis=1) / np.linalg.norm(theirs, axis=1)
    return {"texts": len(texts), "mean": round(float(cos.mean()), 4), "p5": round(float(np.percentile(cos, 5)), 4),
            "min": round(float(cos.min()), 4)}


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
    run = TrainingRun(config.output, config.loop)
    trainset = validation_split(config.data_dir, config.val_fraction, config.loop.seed,
                                scifact=any(s.startswith("scifact") for s in config.sets))
    validation = trainset.validation
    validation.write(Path(config.output) / "validation")
    texts = alignment_texts(config, set(validation.queries))

    torch.manual_seed(config.loop.seed)
    projection = {"proj_dim": config.proj_dim} if config.proj_dim else {}
    student = asymmetric_config(config.doc_encoder,
                                **{k: getattr(config.student, k) for k in QUERY_SIDE}, **projection)
    model = TwinBert.load(run.checkpoint) if run.resuming else TwinBert(student)
    vectors = StoreVectors(config.doc_stores, model)
    vectors(list(dict.fromkeys(d.docno for docs in cutoff(validation.candidates, config.val_depth).values()
                               for d in docs)))  # every validation candidate must be stored: fail before encoding
    encoder = target_encoder(config.doc_encoder, str(model.device))
    if encoder.fingerprint() != model.fingerprint():
        raise RankerError(f"{config.doc_encoder!r} is not the bi-encoder this student was made against")
    targets = torch.from_numpy(encode_targets(encoder, texts, Path(config.targets or Path(config.output) / "targets")))
    if model.query_tower.projection is not None and not run.resuming:
        fit_projection(model, texts, targets)
    if config.freeze_embeddings:  # the checkpoint's own token vectors: a quarter of each step's optimizer work
        model.freeze_query_word_embeddings()
    head = [p for n, p in model.named_parameters() if ".encoder." not in n]
    body = [p for n, p in model.named_parameters() if ".encoder." in n and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
                                  weight_decay=0.01)

    def step(n: int) -> dict:
        rows = random.Random(config.loop.step_seed(n)).sample(range(len(texts)), config.batch_size)
        q = model.query_tower([texts[i] for i in rows], model.config.query_max_length)
        target = targets[rows].to(q.device)
        if config.loss == "cosine":
            loss = (1 - nn.functional.cosine_similarity(q, target, dim=-1)).mean()
        else:
            loss = (q - target).pow(2).sum(-1).mean()
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
