"""Cross-encoder teacher: model, reranker and training loop.

A cross-encoder reads query and passage together and gives one raw logit per pair (``score_type: logit``).
Two heads:

* ``cls``: a Hugging Face sequence-classification model (``[CLS] q [SEP] p [SEP]``, one output). Any such
  folder or hub name (e.g. ``cross-encoder/ms-marco-MiniLM-L-6-v2``) loads with this head.
* ``span-cos``: ``scale * cos(mean(query-span vectors), mean(passage-span vectors))`` over the joint input's
  last layer, with a learnable scale. Two input layouts:

  - ``joint``: ``[CLS] q [SEP] p [SEP]``, as the ``cls`` head reads it;
  - ``gated``: ``[CLS] q [SEP] [CLS] p [SEP]``, positions restarting at the passage, and a learnable
    attention bias per layer and head added wherever a token attends across the two segments. With a
    very negative bias the model is exactly the mean-pooling bi-encoder it starts from (all-MiniLM-L6-v2
    scores 0.64 nDCG@10 zero-shot on DL19), so training starts from the bi-encoder and learns how much
    cross-attention to open.

A model folder holds the encoder in Hugging Face layout (``config.json``, ``model.safetensors``, tokenizer
files), ``head.safetensors`` for the ``span-cos`` parameters, and ``ranker_config.json`` (``model_type``,
``score_type``, ``head``, ``layout``, lengths, training metadata).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from .biencoder import auto_device, bundled_minilm, length_order, load_tokenizer, mean_pool
from .errors import RankerError
from .io import write_json
from .pipeline import Reranker, pending, rescored
from .training import LoopSettings, TrainingRun
from .trainset import (
    DEFAULT_DATA,
    SCIFACT_VAL_QUERIES,
    SPARSE_SETS,
    TRAIN_SETS,
    QueryExamples,
    TrainSet,
    ValidationSet,
    build_trainset,
)
from .types import Query, Ranking, cutoff

RANKER_CONFIG = "ranker_config.json"
HEAD_WEIGHTS = "head.safetensors"
HEADS = ("span-cos", "cls")
LAYOUTS = ("joint", "gated")


@dataclass(frozen=True)
class CrossEncoderSpec:
    """Architecture of a cross-encoder.

    Attributes:
        head: ``span-cos`` or ``cls``.
        layout: ``joint`` or ``gated`` (``gated`` needs ``span-cos``).
        max_length: Tokens per pair, query and passage together.
        query_max_length: Query tokens kept in the ``gated`` layout (the passage gets the rest).
        segment_bias: Initial cross-segment attention bias (``gated``).
        scale: Initial scale of the ``span-cos`` cosine.
    """

    head: str = "span-cos"
    layout: str = "gated"
    max_length: int = 160
    query_max_length: int = 32
    segment_bias: float = -4.0
    scale: float = 20.0

    def __post_init__(self) -> None:
        if self.head not in HEADS or self.layout not in LAYOUTS:
            raise RankerError(f"head must be one of {HEADS} and layout one of {LAYOUTS}, got {self.head!r}, "
                              f"{self.layout!r}")
        if self.head == "cls" and self.layout != "joint":
            raise RankerError("the 'cls' head reads the joint layout only")


class CrossEncoder(nn.Module):
    """A cross-encoder scoring ``(query, passage)`` pairs with one raw logit each.

    Build one with :meth:`from_pretrained`; ``forward`` takes tokenised batches from :meth:`tokenize`.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, spec: CrossEncoderSpec, metadata: dict | None = None):
        super().__init__()
        self.model, self.tokenizer, self.spec = model, tokenizer, spec
        self.metadata = metadata or {}
        if spec.head == "span-cos":
            self.log_scale = nn.Parameter(torch.tensor(math.log(spec.scale)))
            if spec.layout == "gated":
                shape = (model.config.num_hidden_layers, model.config.num_attention_heads)
                self.segment_bias = nn.Parameter(torch.full(shape, float(spec.segment_bias)))

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, spec: CrossEncoderSpec | None = None,
                        max_length: int | None = None, device: str | None = None) -> CrossEncoder:
        """Load a :meth:`save` folder or any HF sequence-classification model, or put a new head on an encoder.

        Args:
            path: Folder or hub name; default: the bundled all-MiniLM-L6-v2.
            spec: The head to put on a plain encoder (default :class:`CrossEncoderSpec`); ignored for a saved
                cross-encoder (its ``ranker_config.json`` says) and for a sequence-classification model (``cls``).
            max_length: Override the tokens kept per pair.
            device: Default: CUDA when available.
        """
        from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = str(path or bundled_minilm())
        saved = Path(path) / RANKER_CONFIG
        config = AutoConfig.from_pretrained(path)
        metadata: dict = {}
        if saved.is_file():
            metadata = json.loads(saved.read_text())
            if metadata.get("model_type") != "cross-encoder":
                raise RankerError(f"{saved}: model_type is {metadata.get('model_type')!r}, not 'cross-encoder'")
            names = {f.name for f in dataclasses.fields(CrossEncoderSpec)}
            spec = CrossEncoderSpec(**{k: v for k, v in metadata.items() if k in names})
        elif any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
            if config.num_labels != 1:
                raise RankerError(f"{path}: a cross-encoder has one output; this model has {config.num_labels}")
            spec = CrossEncoderSpec(head="cls", layout="joint", max_length=min(512, config.max_position_embeddings))
        spec = spec or CrossEncoderSpec()
        if max_length is not None:
            spec = dataclasses.replace(spec, max_length=max_length)
        if spec.head == "cls":
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
        else:
            model = AutoModel.from_pretrained(path, dtype=torch.float32, add_pooling_layer=False)
        encoder = cls(model, load_tokenizer(path, config), spec, metadata.get("training"))
        if saved.is_file() and spec.head == "span-cos":
            encoder.load_state_dict(load_file(Path(path) / HEAD_WEIGHTS), strict=False)
        return encoder.to(auto_device(device)).eval()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def head_parameters(self) -> list[nn.Parameter]:
        """The ``span-cos`` scale and segment bias (trained with their own learning rate)."""
        return [p for name, p in self.named_parameters() if not name.startswith("model.")]

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        """Input tensors for ``(query, passage)`` pairs, padded to the longest; ``segment`` is 0/1 per token."""
        queries, passages = [q for q, _ in pairs], [p for _, p in pairs]
        if self.spec.layout == "joint":
            enc = self.tokenizer(queries, passages, truncation="longest_first", max_length=self.spec.max_length,
                                 padding=True, return_tensors="pt", return_token_type_ids=True)
            batch = dict(enc)
            batch["segment"] = enc["token_type_ids"]
            return batch
        spec = self.spec
        q_ids = self.tokenizer(queries, truncation=True, max_length=spec.query_max_length)["input_ids"]
        p_len = spec.max_length - spec.query_max_length
        p_ids = self.tokenizer(passages, truncation=True, max_length=p_len)["input_ids"]
        width = max(len(q) + len(p) for q, p in zip(q_ids, p_ids))
        batch = {k: torch.zeros(len(pairs), width, dtype=torch.long)
                 for k in ("input_ids", "attention_mask", "position_ids", "segment")}
        for i, (q, p) in enumerate(zip(q_ids, p_ids)):
            n = len(q) + len(p)
            batch["input_ids"][i, :n] = torch.tensor(q + p)
            batch["attention_mask"][i, :n] = 1
            batch["position_ids"][i, :n] = torch.tensor([*range(len(q)), *range(len(p))])
            batch["segment"][i, len(q):n] = 1
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
        return batch

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """One raw logit per pair, shape ``(batch,)``."""
        batch = {k: v.to(self.device) for k, v in batch.items()}
        if self.spec.head == "cls":
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
            return self.model(**inputs).logits[:, 0]
        valid, segment = batch["attention_mask"].bool(), batch["segment"]
        hidden = self.model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                                       position_ids=batch.get("position_ids"))
        pad = torch.zeros(valid.shape, dtype=hidden.dtype, device=self.device)
        pad = pad.masked_fill(~valid, torch.finfo(hidden.dtype).min)[:, None, None, :]
        cross = (segment[:, :, None] != segment[:, None, :]).to(hidden.dtype)[:, None]
        for i, layer in enumerate(self.model.encoder.layer):
            mask = pad + cross * self.segment_bias[i][None, :, None, None] if self.spec.layout == "gated" else pad
            out = layer(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        q = mean_pool(hidden, valid & (segment == 0))
        p = mean_pool(hidden, valid & (segment == 1))
        return self.log_scale.exp() * nn.functional.cosine_similarity(q, p, dim=-1)

    def logits(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32, progress: bool = False) -> torch.Tensor:
        """Logits of ``pairs`` in the order given, computed in batches of similar length (little padding)."""
        order = length_order([q + " " + p for q, p in pairs])
        chunks = [self(self.tokenize([pairs[i] for i in order[start:start + batch_size]]))
                  for start in tqdm(range(0, len(order), batch_size), desc="score", unit="batch", disable=not progress)]
        return torch.cat(chunks)[torch.tensor(order).argsort()]

    @torch.inference_mode()
    def score_pairs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                    progress: bool = False) -> np.ndarray:
        """Raw logits for ``(query text, passage text)`` pairs, as float32, in the order given."""
        was_training = self.training
        self.eval()
        scores = self.logits(pairs, batch_size, progress).float().cpu().numpy()
        self.train(was_training)
        return scores

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16, metadata: dict | None = None) -> Path:
        """Write a model folder (weights in ``dtype``); returns ``path``. Loading it gives float32 weights."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in self.model.state_dict().items()}
        self.model.save_pretrained(tmp, state_dict=state)
        self.tokenizer.save_pretrained(tmp)
        if self.spec.head == "span-cos":
            save_file({n: p.detach().cpu().float().contiguous() for n, p in self.named_parameters()
                       if not n.startswith("model.")}, tmp / HEAD_WEIGHTS)
        write_json(tmp / RANKER_CONFIG, {"model_type": "cross-encoder", "score_type": "logit",
                                         **dataclasses.asdict(self.spec), "dtype": str(dtype).removeprefix("torch."),
                                         "training": metadata if metadata is not None else self.metadata})
        for file in tmp.iterdir():
            file.chmod(0o644)  # temporary files are created private; the model folder is for everyone
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        return path


class CrossEncoderReranker(Reranker):
    """Rerank candidates by cross-encoder logit.

    Args:
        texts: ``docno -> passage text`` for every candidate.
        model: A :class:`CrossEncoder`, or a folder/name for :meth:`CrossEncoder.from_pretrained`.
        batch_size: Pairs per forward pass.
        progress: Show a tqdm bar.
    """

    name = "cross-encoder"

    def __init__(self, texts: Mapping[str, str], model: CrossEncoder | str | Path, batch_size: int = 32,
                 progress: bool = True):
        self.texts, self.batch_size, self.progress = texts, batch_size, progress
        self.model = model if isinstance(model, CrossEncoder) else CrossEncoder.from_pretrained(model)

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        docs = pending(queries, candidates)
        pairs = [(queries[d.qid].text, self.texts[d.docno]) for d in docs]
        scores = self.model.score_pairs(pairs, self.batch_size, self.progress)
        return rescored(docs, scores)

    def config(self) -> dict:
        return {"stage": self.name, **dataclasses.asdict(self.model.spec)}


# ---------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """What :func:`train_teacher` trains, on what, for how long.

    Attributes:
        output: Run folder: ``log.jsonl``, ``checkpoint/`` (last, for resuming), ``best/``, ``model/`` (fp16).
        init: Starting weights (folder or name); default: the bundled all-MiniLM-L6-v2.
        spec: Architecture, for a plain-encoder start.
        loss: ``softmax`` (1 positive + ``group_size - 1`` negatives, cross-entropy on the positive) or
            ``listwise`` (up to half the group positives, target distribution proportional to ``2**grade - 1``).
        group_size: Passages per query per step.
        queries_per_step: Queries per step; each set in ``sets`` is drawn equally often.
        micro_batch: Pairs per forward pass within a step (grouped by length to save padding).
        lr: Encoder learning rate (AdamW, linear warm-up then linear decay to 0 at ``loop.max_steps``).
        head_lr: Learning rate of the ``span-cos`` scale and segment bias.
        loop: Steps, warm-up, time budget, validation and checkpoint cadence; its seed also seeds the
            validation split, sampling and dropout (each step's draws depend on seed and step only).
        data: The ``msmarco-passage`` folder.
        sets: Labelled sets trained on.
        sparse: Sets whose unjudged candidates are not negatives (see :mod:`ranker.trainset`).
        val_fraction: Share of DL20/DL21 queries held out for validation.
        scifact_val: SciFact train queries held out for validation (when ``scifact-train`` is in ``sets``).
        val_depth: Candidates reranked per validation query (BM25 top-k).
        threads: torch CPU threads.
    """

    output: str
    init: str | None = None
    spec: CrossEncoderSpec = field(default_factory=CrossEncoderSpec)
    loss: str = "softmax"
    group_size: int = 8
    queries_per_step: int = 4
    micro_batch: int = 8
    lr: float = 2e-5
    head_lr: float = 1e-2
    loop: LoopSettings = field(default_factory=LoopSettings)
    data: str = str(DEFAULT_DATA)
    sets: tuple[str, ...] = TRAIN_SETS
    sparse: tuple[str, ...] = SPARSE_SETS
    val_fraction: float = 0.25
    scifact_val: int = SCIFACT_VAL_QUERIES
    val_depth: int = 100
    threads: int | None = 2


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


def sample_batch(trainset: TrainSet, config: TrainConfig, step: int) -> tuple[list[tuple[str, str]], torch.Tensor]:
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


def group_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between each group's softmax over its logits and its target distribution, averaged."""
    log_p = logits.view(targets.shape).log_softmax(-1)
    return -(targets.to(log_p.device) * log_p).sum(-1).mean()


def train_teacher(config: TrainConfig) -> Path:
    """Train a cross-encoder teacher; resumes from ``output/checkpoint`` if present. Returns the fp16 model folder.

    The shipped model (``output/model``) is the checkpoint with the best validation nDCG@10, saved in fp16,
    with the configuration, the training-set counts, the validation curve, pairs seen and wall time as metadata.
    The loop (log, checkpoints, resume, time budget) is :class:`ranker.training.TrainingRun`.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    run = TrainingRun(config.output, config.loop)
    trainset = build_trainset(config.data, config.sets, config.val_fraction, config.loop.seed, config.sparse,
                              scifact_val=config.scifact_val)
    torch.manual_seed(config.loop.seed)
    model = CrossEncoder.from_pretrained(run.checkpoint if run.resuming else config.init, config.spec)
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
        if model.spec.head == "span-cos":
            record["scale"] = round(model.log_scale.exp().item(), 2)
        if model.spec.layout == "gated":
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
    state = run.fit(model, optimizer, step, lambda: validate(model, trainset.validation, trainset.texts, config.val_depth),
                    lambda path, dtype, meta: model.save(path, dtype, meta), metadata, pairs_per_step)
    return CrossEncoder.from_pretrained(run.best).save(Path(config.output) / "model", torch.float16, metadata(state))
