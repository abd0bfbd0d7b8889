"""TwinBERT student: two towers encode query and passage apart, a small crossing layer scores the pair.

Each tower is a BERT-family encoder (the first ``num_layers`` layers of a checkpoint, default the bundled
all-MiniLM-L6-v2), a pooling (a learned weighted average of the last layer's token vectors, or [CLS]) and an
optional down-projection ``tanh(W e)``. Passage vectors do not depend on the query, so they are computed once
and cached in an :class:`ranker.store.EmbeddingStore`; per query only the query is encoded, then crossed with
each candidate's cached vector:

* ``res``: ``x = max(q, d)``, ``h = relu(W2 relu(W1 x) + x)``, logit ``w·h + b`` (symmetric in q and d);
* ``cos``: logit ``w cos(q, d) + b``.

Scores are raw logits (``score_type: logit``); the sigmoid belongs to the loss. At initialisation the weighted
pooling is exact mean pooling and ``cos`` crossing is the plain cosine, so an untrained ``cos`` model without
projection ranks like the zero-shot bi-encoder (:mod:`ranker.biencoder`).

A model folder holds ``ranker_config.json`` (``model_type: twinbert``, the config, the document-side
fingerprint), ``doc_encoder/`` and, unless the encoder is shared, ``query_encoder/`` (Hugging Face layout:
``config.json``, ``model.safetensors``, tokenizer files), and ``head.safetensors`` (pooling, projection and
crossing weights).

Document-side fingerprint: the SHA-256 of the doc-side config (pooling, projection size, passage length) as
JSON, then of every tensor of the document tower (encoder, pooling, projection) in name order, each as its
name, its shape and its values rounded to float16 (little-endian bytes). Float16 is the representation
:meth:`TwinBert.save` writes by default and fp16 -> fp32 -> fp16 is exact, so a model, its saved copy (fp16 or
fp32) and that copy loaded back share one fingerprint; two models that differ only below float16 precision
share it too.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from . import __version__
from .biencoder import auto_device, bundled_minilm, length_order, load_tokenizer
from .errors import MissingInputError, RankerError
from .io import write_json
from .pipeline import Reranker, rescored
from .store import EmbeddingStore
from .types import Query, Ranking

RANKER_CONFIG = "ranker_config.json"
HEAD_WEIGHTS = "head.safetensors"
QUERY_ENCODER, DOC_ENCODER = "query_encoder", "doc_encoder"
QueryDtype = Literal["float32", "bfloat16"]
QUERY_DTYPES: tuple[str, ...] = ("float32", "bfloat16")


@dataclass(frozen=True)
class TwinBertConfig:
    """Architecture of a TwinBERT model.

    Attributes:
        encoder: HF checkpoint both towers start from; ``None``: the bundled all-MiniLM-L6-v2.
        num_layers: Transformer layers kept (the first ``num_layers`` of the checkpoint).
        shared_encoder: One tower (encoder, pooling, projection) for both sides, or two copies.
        pooling: ``weighted`` (learned softmax weights over the last layer's tokens) or ``cls``.
        proj_dim: Size of the ``tanh(Linear)`` down-projection after pooling; ``None``: no projection.
        crossing: ``res`` (max, residual block, logistic output) or ``cos`` (scaled cosine).
        res_width: Hidden width of the residual block (W1's output size).
        cos_scale: Starting ``w`` of the ``cos`` crossing (learned afterwards). Cosines of one query's
            candidates spread over ~0.1, teacher scores over several units: at ``w = 1`` distillation has to
            stretch the cosines themselves and disturbs the pretrained geometry (measured: docs/student-experiments.md).
        query_max_length: Tokens kept per query.
        doc_max_length: Tokens kept per passage.
    """

    encoder: str | None = None
    num_layers: int = 6
    shared_encoder: bool = True
    pooling: Literal["weighted", "cls"] = "weighted"
    proj_dim: int | None = None
    crossing: Literal["res", "cos"] = "res"
    res_width: int = 64
    cos_scale: float = 10.0
    query_max_length: int = 32
    doc_max_length: int = 256

    def __post_init__(self) -> None:
        if self.pooling not in ("weighted", "cls") or self.crossing not in ("res", "cos"):
            raise RankerError(f"pooling must be 'weighted' or 'cls' and crossing 'res' or 'cos', got "
                              f"{self.pooling!r}, {self.crossing!r}")
        if self.num_layers < 1 or (self.proj_dim is not None and self.proj_dim < 1) or self.res_width < 1:
            raise RankerError("num_layers, proj_dim and res_width must be positive")


def load_encoder(path: str | Path, num_layers: int | None = None) -> tuple[nn.Module, Any]:
    """An HF encoder keeping its first ``num_layers`` layers (default all), in float32, and its tokenizer.

    Raises:
        RankerError: The checkpoint has fewer than ``num_layers`` layers.
    """
    from transformers import AutoConfig, AutoModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config = AutoConfig.from_pretrained(path)
    if num_layers is not None:
        if num_layers > config.num_hidden_layers:
            raise RankerError(f"{path} has {config.num_hidden_layers} layers, cannot keep {num_layers}")
        config.num_hidden_layers = num_layers
    model = AutoModel.from_pretrained(path, config=config, dtype=torch.float32, add_pooling_layer=False)
    return model, load_tokenizer(path, config)


class WeightedPooling(nn.Module):
    """``a_i = w·h_i + b``, padding set to -inf, ``α = softmax(a)``, ``e = Σ α_i h_i``.

    ``w`` and ``b`` start at zero, so the pooling starts as the exact mean over the real tokens.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = self.score(hidden).squeeze(-1).masked_fill(~mask.bool(), float("-inf"))
        return (logits.softmax(-1).unsqueeze(-1) * hidden).sum(1)


class Tower(nn.Module):
    """One side: encoder, pooling, optional ``tanh(W e)`` projection."""

    def __init__(self, encoder: nn.Module, tokenizer: Any, pooling: str, proj_dim: int | None):
        super().__init__()
        self.encoder, self.tokenizer = encoder, tokenizer
        hidden = encoder.config.hidden_size
        self.pooling = WeightedPooling(hidden) if pooling == "weighted" else None
        self.projection = nn.Linear(hidden, proj_dim) if proj_dim else None

    def forward(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        """One vector per text, shape ``(len(texts), dim)``."""
        device = next(self.parameters()).device
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                               return_tensors="pt").to(device)
        hidden = self.encoder(**batch).last_hidden_state
        vectors = self.pooling(hidden, batch["attention_mask"]) if self.pooling else hidden[:, 0]
        return torch.tanh(self.projection(vectors)) if self.projection else vectors


class ResidualCrossing(nn.Module):
    """``x = max(q, d)``, ``h = relu(W2 relu(W1 x) + x)``, logit ``w·h + b``."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.w1, self.w2, self.out = nn.Linear(dim, width), nn.Linear(width, dim), nn.Linear(dim, 1)

    def forward(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        x = torch.maximum(q, d)
        return self.out(torch.relu(self.w2(torch.relu(self.w1(x))) + x)).squeeze(-1)


class CosineCrossing(nn.Module):
    """Logit ``w cos(q, d) + b``; starts at ``w = scale``, ``b = 0`` (a scaled cosine)."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.out = nn.Linear(1, 1)
        nn.init.constant_(self.out.weight, scale)
        nn.init.zeros_(self.out.bias)

    def forward(self, q: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return self.out(nn.functional.cosine_similarity(q, d, dim=-1).unsqueeze(-1)).squeeze(-1)


class TwinBert(nn.Module):
    """Two towers and a crossing layer; scores are raw logits.

    Args:
        config: The architecture; default :class:`TwinBertConfig`.
        device: ``"cpu"``, ``"cuda"``…; default: CUDA when available.
        encoders: Where the towers' encoders load from, ``{"doc": path, "query": path}`` (``query`` unused
            with a shared encoder); default: both from ``config.encoder``, cut to ``config.num_layers``.
    """

    def __init__(self, config: TwinBertConfig | None = None, device: str | None = None,
                 encoders: Mapping[str, str | Path] | None = None):
        super().__init__()
        self.config = config = config or TwinBertConfig()
        start = str(config.encoder or bundled_minilm())
        paths = encoders or {"doc": start, "query": start}

        def tower(side: str) -> Tower:
            return Tower(*load_encoder(paths[side], config.num_layers), config.pooling, config.proj_dim)

        self.doc_tower = tower("doc")
        self.query_tower = self.doc_tower if config.shared_encoder else tower("query")
        self.crossing = (ResidualCrossing(self.dim, config.res_width) if config.crossing == "res"
                         else CosineCrossing(config.cos_scale))
        self.to(auto_device(device)).eval()

    @property
    def dim(self) -> int:
        """Size of a query or passage vector."""
        return self.config.proj_dim or self.doc_tower.encoder.config.hidden_size

    @property
    def bounded(self) -> bool:
        """Whether vectors lie in [-1, 1] (a tanh projection): the store then uses 256 fixed levels for int8."""
        return self.config.proj_dim is not None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def cross(self, q_vecs: torch.Tensor, d_vecs: torch.Tensor) -> torch.Tensor:
        """Logits of query vectors against passage vectors.

        Shapes: ``q (n, dim)`` with ``d (n, k, dim)`` gives ``(n, k)`` (each query against its ``k`` candidates);
        ``q (dim,)`` with ``d (k, dim)`` gives ``(k,)``; equal shapes score row by row.
        """
        if d_vecs.dim() == q_vecs.dim() + 1:
            q_vecs = q_vecs.unsqueeze(-2)
        return self.crossing(q_vecs, d_vecs)

    def forward(self, queries: Sequence[str], docs: Sequence[Sequence[str]]) -> torch.Tensor:
        """Training scores: logits ``(len(queries), k)`` of each query against its ``k`` passages.

        Raises:
            RankerError: The queries have different numbers of passages.
        """
        sizes = {len(group) for group in docs}
        if len(sizes) != 1 or len(docs) != len(queries):
            raise RankerError(f"forward needs one group of passages per query, all the same size; got "
                              f"{len(queries)} queries and group sizes {sorted(sizes)}")
        q = self.query_tower(queries, self.config.query_max_length)
        d = self.doc_tower([text for group in docs for text in group], self.config.doc_max_length)
        return self.cross(q, d.view(len(queries), sizes.pop(), -1))

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False,
                       tower: Tower | None = None) -> torch.Tensor:
        """Query vectors, float32 on CPU, one row per text in the order given (``tower``: a cast copy of the
        query tower to run instead)."""
        return self._encode(tower or self.query_tower, texts, self.config.query_max_length, batch_size, progress)

    def encode_docs(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Passage vectors, float32 on CPU, one row per text in the order given."""
        return self._encode(self.doc_tower, texts, self.config.doc_max_length, batch_size, progress)

    @torch.inference_mode()
    def _encode(self, tower: Tower, texts: Sequence[str], max_length: int, batch_size: int,
                progress: bool) -> torch.Tensor:
        was_training = self.training
        if was_training:
            self.eval()
        order = length_order(texts)
        out = torch.zeros(len(texts), self.dim)
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="encode", unit="batch", disable=not progress):
            idx = order[start:start + batch_size]
            out[idx] = tower([texts[i] for i in idx], max_length).float().cpu()
        if was_training:
            self.train()
        return out

    def fingerprint(self) -> str:
        """SHA-256 of what cached passage vectors depend on (see the module docstring for the rule)."""
        digest = hashlib.sha256(json.dumps({k: getattr(self.config, k) for k in
                                            ("pooling", "proj_dim", "doc_max_length")}, sort_keys=True).encode())
        for name, tensor in sorted(self.doc_tower.state_dict().items()):
            values = tensor.detach().cpu()
            values = values.to(torch.float16) if values.is_floating_point() else values
            array = values.contiguous().numpy()
            digest.update(f"{name}:{tuple(values.shape)}".encode())
            digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write a model folder (encoder weights in ``dtype``, head in float32); returns ``path``.

        The folder replaces ``path`` only once complete. Loading gives float32 weights.
        """
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        towers = {DOC_ENCODER: self.doc_tower}
        if not self.config.shared_encoder:
            towers[QUERY_ENCODER] = self.query_tower
        for folder, tower in towers.items():
            state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tower.encoder.state_dict().items()}
            tower.encoder.save_pretrained(tmp / folder, state_dict=state)
            tower.tokenizer.save_pretrained(tmp / folder)
        save_file(self._head_state(), tmp / HEAD_WEIGHTS)
        write_json(tmp / RANKER_CONFIG, {
            "model_type": "twinbert", "score_type": "logit", **dataclasses.asdict(self.config),
            "encoders": {"doc": DOC_ENCODER, "query": DOC_ENCODER if self.config.shared_encoder else QUERY_ENCODER},
            "dim": self.dim, "dtype": str(dtype).removeprefix("torch."), "doc_fingerprint": self.fingerprint(),
            "ranker_version": __version__})
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> TwinBert:
        """Load a folder written by :meth:`save`.

        Raises:
            MissingInputError: ``path`` has no ``ranker_config.json``.
            RankerError: The folder holds another model type.
        """
        path = Path(path)
        saved = read_ranker_config(path)
        if saved.get("model_type") != "twinbert":
            raise RankerError(f"{path / RANKER_CONFIG}: model_type is {saved.get('model_type')!r}, not "
                              f"'twinbert'; load it with the class for that type")
        # a field missing from an older folder takes its default (all such fields only set starting weights)
        config = TwinBertConfig(**{f.name: saved[f.name] for f in dataclasses.fields(TwinBertConfig) if f.name in saved})
        model = cls(config, device, {side: path / folder for side, folder in saved["encoders"].items()})
        head = load_file(path / HEAD_WEIGHTS)
        if head.keys() != model._head_state().keys():
            raise RankerError(f"{path / HEAD_WEIGHTS}: weights do not match the architecture in {RANKER_CONFIG}: "
                              f"{sorted(head.keys() ^ model._head_state().keys())}")
        model.load_state_dict(head, strict=False)
        return model

    def _head_state(self) -> dict[str, torch.Tensor]:
        """Pooling, projection and crossing weights in float32 on CPU, each shared tensor once."""
        return {n: p.detach().cpu().float().contiguous() for n, p in self.named_parameters()
                if not n.startswith(("doc_tower.encoder.", "query_tower.encoder."))}


def read_ranker_config(path: str | Path) -> dict:
    """``ranker_config.json`` of a model folder.

    Raises:
        MissingInputError: There is none.
    """
    file = Path(path) / RANKER_CONFIG
    if not file.is_file():
        raise MissingInputError(f"{path}: not a ranker model folder (no {RANKER_CONFIG})")
    return json.loads(file.read_text())


class TwinBertReranker(Reranker):
    """Rerank candidates by TwinBERT logit, with passage vectors from an :class:`EmbeddingStore`.

    Per call, the queries are encoded in batches, every candidate's vector is looked up (dequantized), and
    each query is crossed with its candidates. ``timing`` accumulates seconds over calls: ``query_encoding``,
    ``lookup``, ``doc_encoding`` (candidates encoded on the fly) and ``crossing``.

    Args:
        model: A :class:`TwinBert` or a model folder.
        store: An :class:`EmbeddingStore` or its folder; it must come from this model (same fingerprint).
        texts: ``docno -> passage text``, for ``encode_missing``.
        encode_missing: Encode candidates the store lacks from ``texts`` (quantized like the store's vectors)
            instead of raising.
        batch_size: Texts per forward pass.
        query_dtype: ``float32`` (exact), or ``bfloat16``: the query tower runs on a bfloat16 copy, about 1.5x
            faster on a CPU with native bfloat16 (AVX512-BF16/AMX; slower on one without) and within 0.0004
            nDCG@10 of float32 on DL19 and SciFact (docs/student-experiments.md). Crossing stays float32.

    Raises:
        StoreMismatchError: The store was built by another model.
    """

    name = "twinbert"

    def __init__(self, model: TwinBert | str | Path, store: EmbeddingStore | str | Path,
                 texts: Mapping[str, str] | None = None, encode_missing: bool = False, batch_size: int = 64,
                 query_dtype: QueryDtype = "float32"):
        self.model = (model if isinstance(model, TwinBert) else TwinBert.load(model)).eval()
        if query_dtype not in QUERY_DTYPES:
            raise RankerError(f"query_dtype must be one of {', '.join(QUERY_DTYPES)}, not {query_dtype!r}")
        self.query_dtype = query_dtype
        self.query_tower = self.model.query_tower if query_dtype == "float32" else \
            copy.deepcopy(self.model.query_tower).to(getattr(torch, query_dtype))
        self.store = store if isinstance(store, EmbeddingStore) else EmbeddingStore.load(store)
        self.store.check_model(self.model)
        if encode_missing and texts is None:
            raise RankerError("encode_missing needs the passage texts")
        self.texts, self.encode_missing, self.batch_size = texts, encode_missing, batch_size
        self.timing = {"query_encoding": 0.0, "lookup": 0.0, "doc_encoding": 0.0, "crossing": 0.0}

    @contextlib.contextmanager
    def _timed(self, key: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.timing[key] += time.perf_counter() - started

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        qids = [qid for qid in candidates if qid in queries]
        docs = [d for qid in qids for d in candidates[qid]]
        with self._timed("query_encoding"):
            q_vecs = self.model.encode_queries([queries[qid].text for qid in qids], self.batch_size,
                                               tower=self.query_tower)
        d_vecs = self._doc_vectors([d.docno for d in docs])
        with self._timed("crossing"), torch.inference_mode():
            rows = torch.tensor([i for i, qid in enumerate(qids) for _ in candidates[qid]], dtype=torch.long)
            device = self.model.device
            scores = self.model.cross(q_vecs[rows].to(device), torch.from_numpy(d_vecs).to(device)).cpu().tolist()
        return rescored(docs, scores)

    def _doc_vectors(self, docnos: list[str]) -> np.ndarray:
        """One float32 row per docno: from the store, or encoded when missing and allowed."""
        with self._timed("lookup"):
            unique = list(dict.fromkeys(docnos))
            known = [d for d in unique if d in self.store]
            missing = [d for d in unique if d not in self.store]
            if missing and not self.encode_missing:
                raise RankerError(f"{len(missing)} candidate(s) not in the embedding store {self.store.path}: "
                                  f"{', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} "
                                  "(rebuild the store, or pass encode_missing=True with the texts)")
            found = self.store.lookup(known)
        if missing:
            with self._timed("doc_encoding"):
                vectors = self.model.encode_docs(self._texts(missing), self.batch_size).numpy()
                found = np.concatenate([found, self.store.requantize(vectors)])
        row = {d: i for i, d in enumerate(known + missing)}
        return found[[row[d] for d in docnos]]

    def _texts(self, docnos: list[str]) -> list[str]:
        lacking = [d for d in docnos if d not in self.texts]
        if lacking:
            raise RankerError(f"no text for candidate(s) missing from the store: {', '.join(lacking[:5])}")
        return [self.texts[d] for d in docnos]

    def config(self) -> dict:
        return {"stage": self.name, **dataclasses.asdict(self.model.config), "store": str(self.store.path),
                "store_dtype": self.store.dtype, "fingerprint": self.store.fingerprint,
                "encode_missing": self.encode_missing, "query_dtype": self.query_dtype}
