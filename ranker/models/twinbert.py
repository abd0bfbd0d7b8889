"""TwinBERT student: two towers encode query and passage apart, a small crossing layer scores the pair.

Each tower is a BERT-family encoder (the first ``num_layers`` layers of a checkpoint, default the bundled
all-MiniLM-L6-v2), a pooling (a learned weighted average of the last layer's token vectors, or [CLS]) and an
optional down-projection ``tanh(W e)``. Passage vectors do not depend on the query, so they are computed once
and cached in an :class:`ranker.store.embeddings.EmbeddingStore`; per query only the query is encoded, then crossed with
each candidate's cached vector:

* ``res``: ``x = max(q, d)``, ``h = relu(W2 relu(W1 x) + x)``, logit ``w·h + b`` (symmetric in q and d);
* ``cos``: logit ``w cos(q, d) + b``.

Scores are raw logits (``score_type: logit``); the sigmoid belongs to the loss. At initialisation the weighted
pooling is exact mean pooling and ``cos`` crossing is the plain cosine, so an untrained ``cos`` model without
projection ranks like the zero-shot bi-encoder (:mod:`ranker.models.biencoder`).

A model folder holds ``ranker.json`` (:mod:`ranker.io.artifact`: type ``twinbert``, the config, the document-side
fingerprint), ``doc_encoder/`` and, unless the encoder is shared, ``query_encoder/`` (Hugging Face layout:
``config.json``, ``model.safetensors``, tokenizer files), and ``head.safetensors`` (pooling, projection and
crossing weights).

**Asymmetric TwinBERT** (``config.doc_encoder``, the paper allows separate towers): the passage side is a
sentence-transformers bi-encoder (all-mpnet-base-v2: 12 layers × 768), run once offline into its own embedding
store (``rank encode --encoder biencoder``), and the query side is a small tower (MiniLM, ≤ 6 × 384) with a
projection to the bi-encoder's size, trained against the frozen passage vectors (:mod:`ranker.train.align`, then
:mod:`ranker.train.distill` with ``doc_stores``). Its folder holds the query tower and head only; the document-side
fingerprint is the bi-encoder's (recorded, checked when the bi-encoder is loaded to encode new passages).

Document-side fingerprint: the SHA-256 of the doc-side config (pooling, projection size, passage length) as
JSON, then of the document tower's tokenizer (:func:`ranker.models.hf.tokenizer_fingerprint`: a store encoded
through another tokenizer is another model's), then of every tensor of the document tower (encoder, pooling,
projection) in name order, each as its name, its shape and its values rounded to float16 (little-endian bytes).
Float16 is the representation :meth:`TwinBert.save` writes by default and fp16 -> fp32 -> fp16 is exact, so a
model, its saved copy (fp16 or fp32) and that copy loaded back share one fingerprint; two models that differ only
below float16 precision share it too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.io.artifact import read_metadata, write_metadata
from ranker.io.atomic import atomic_dir
from ranker.models.biencoder import DEFAULT_MAX_LENGTH, BiEncoder
from ranker.models.config import TwinBertConfig
from ranker.models.hf import (
    WORD_EMBEDDINGS,
    auto_device,
    borrow_word_embeddings,
    length_order,
    load_encoder,
    loading,
    module_fingerprint,
    quiet_loading,
    resolve_checkpoint,
    sentence_max_length,
    unchanged_word_embeddings,
)
from ranker.models.layers import CosineCrossing, ResidualCrossing, Tower
from ranker.store.embeddings import StoreMismatchError

HEAD_WEIGHTS = "head.safetensors"
QUERY_ENCODER, DOC_ENCODER = "query_encoder", "doc_encoder"
def asymmetric_config(doc_encoder: str, **fields) -> TwinBertConfig:
    """An asymmetric architecture over the bi-encoder ``doc_encoder`` (a name or folder); ``fields`` set the query
    side (``encoder``, ``num_layers``, ``crossing``…). Passages keep the bi-encoder's length, and a query encoder
    of another width gets a projection to the bi-encoder's."""
    from transformers import AutoConfig

    def width(model: str | None) -> int:
        path = resolve_checkpoint(model)
        with loading(path):
            return AutoConfig.from_pretrained(path).hidden_size

    path, hidden = resolve_checkpoint(doc_encoder), width(doc_encoder)
    proj_dim = None if width(fields.get("encoder")) == hidden else hidden
    return TwinBertConfig(**{"shared_encoder": False, "proj_dim": proj_dim, "doc_encoder": doc_encoder,
                             "doc_max_length": sentence_max_length(path, DEFAULT_MAX_LENGTH), **fields})


class TwinBert(nn.Module):
    """Two towers and a crossing layer; scores are raw logits.

    Args:
        config: The architecture; default :class:`TwinBertConfig`.
        device: ``"cpu"``, ``"cuda"``…; default: CUDA when available.
        encoders: Where the towers' encoders load from, ``{"doc": path, "query": path}`` (``query`` unused
            with a shared encoder); default: both from ``config.encoder``, cut to ``config.num_layers``.
    """

    def __init__(self, config: TwinBertConfig | None = None, device: str | None = None,
                 encoders: Mapping[str, str | Path] | None = None, doc_fingerprint: str | None = None):
        super().__init__()
        self.config = config = config or TwinBertConfig()
        start = resolve_checkpoint(config.encoder)
        paths = encoders or {"doc": start, "query": start}

        def tower(side: str) -> Tower:
            return Tower(*load_encoder(paths[side], config.num_layers), config.pooling, config.proj_dim)

        self._doc_encoder: BiEncoder | None = None
        self._doc_fingerprint, self._device = doc_fingerprint, device
        self.doc_tower = None if config.doc_encoder else tower("doc")
        self.query_tower = self.doc_tower if config.shared_encoder else tower("query")
        if config.doc_encoder and doc_fingerprint is None:
            # a new asymmetric model: its passage side is this bi-encoder (a loaded one records it, and the
            # bi-encoder is loaded only when passages are to be encoded)
            self._doc_fingerprint = self.doc_encoder.fingerprint()
            if self.doc_encoder.dim != self.dim:
                raise RankerError(f"query vectors have {self.dim} dimensions, the document encoder "
                                  f"{config.doc_encoder!r}'s {self.doc_encoder.dim}: set proj_dim to its size")
        self.crossing = self._new_crossing()
        self.path: Path | None = None  # the folder it was loaded from
        self.to(auto_device(device)).eval()

    def _new_crossing(self) -> nn.Module:
        c = self.config
        return ResidualCrossing(self.dim, c.res_width) if c.crossing == "res" else CosineCrossing(c.cos_scale)

    def reset_crossing(self, crossing: str, res_width: int, cos_scale: float) -> None:
        """Replace the crossing layer by a fresh one of kind ``crossing`` (the towers are kept)."""
        self.config = dataclasses.replace(self.config, crossing=crossing, res_width=res_width, cos_scale=cos_scale)
        self.crossing = self._new_crossing().to(self.device)

    def freeze_query_word_embeddings(self) -> None:
        """Keep the query encoder's word embeddings as they are (a borrowed table, e.g. mpnet's, then stays the
        checkpoint's own and is saved by reference, not copied)."""
        self.query_tower.encoder.embeddings.word_embeddings.weight.requires_grad_(False)

    @property
    def dim(self) -> int:
        """Size of a query or passage vector."""
        return self.config.proj_dim or (self.doc_tower or self.query_tower).encoder.config.hidden_size

    @property
    def bounded(self) -> bool:
        """Whether passage vectors lie in [-1, 1] (a tanh projection): the store then uses 256 fixed levels for
        int8. An asymmetric model's are the bi-encoder's unit vectors (scaled per row, as its own store's)."""
        return self.config.proj_dim is not None and not self.config.doc_encoder

    @property
    def query_positions(self) -> int:
        """The most tokens the query tower can read (its tokenizer's limit and its position table's)."""
        tower = self.query_tower
        return min(tower.tokenizer.model_max_length, tower.encoder.config.max_position_embeddings)

    @property
    def doc_encoder(self) -> BiEncoder:
        """An asymmetric model's passage side (loaded on first use; serving from a store never needs it).

        Raises:
            StoreMismatchError: The bi-encoder found under that name is not the one the model was trained against.
        """
        if self._doc_encoder is None:
            encoder = BiEncoder(self.config.doc_encoder, self.config.doc_max_length, device=self._device,
                                progress=False)
            if self._doc_fingerprint is not None and encoder.fingerprint() != self._doc_fingerprint:
                raise StoreMismatchError(f"document encoder {self.config.doc_encoder!r} ({encoder.model_path}) is "
                                         "not the one this student was trained against (fingerprints differ)")
            self._doc_encoder = encoder
        return self._doc_encoder

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
        texts = [text for group in docs for text in group]
        d = self.encode_docs(texts) if self.config.doc_encoder else self.doc_tower(texts, self.config.doc_max_length)
        return self.score_vectors(queries, d.to(self.device).view(len(queries), sizes.pop(), -1))

    def score_vectors(self, queries: Sequence[str], d_vecs: torch.Tensor) -> torch.Tensor:
        """Training scores of queries against given passage vectors ``(len(queries), k, dim)`` (a frozen
        passage side read from a store): only the query tower runs."""
        return self.cross(self.query_tower(queries, self.config.query_max_length), d_vecs)

    def encode_queries(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Query vectors, float32 on CPU, one row per text in the order given (PyTorch; training uses this, and
        :mod:`ranker.models.query_encoders` has the faster backends)."""
        return self._encode(self.query_tower, texts, self.config.query_max_length, batch_size, progress)

    def encode_docs(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> torch.Tensor:
        """Passage vectors, float32 on CPU, one row per text in the order given."""
        if self.config.doc_encoder:
            return torch.from_numpy(self.doc_encoder.encode(texts))
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
        """SHA-256 of what cached passage vectors depend on (see the module docstring for the rule); an
        asymmetric model's is its bi-encoder's, so that bi-encoder's stores serve it."""
        if self.config.doc_encoder:
            return self._doc_fingerprint
        settings = {k: getattr(self.config, k) for k in ("pooling", "proj_dim", "doc_max_length")}
        return module_fingerprint(self.doc_tower.tokenizer, self.doc_tower, settings)

    def query_fingerprint(self) -> str:
        """SHA-256 of what query vectors depend on, by the same rule over the query tower and its settings (an
        exported query graph records it: :mod:`ranker.models.query_encoders`)."""
        settings = {k: getattr(self.config, k) for k in ("pooling", "proj_dim", "query_max_length")}
        return module_fingerprint(self.query_tower.tokenizer, self.query_tower, settings)

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write a model folder (encoder weights in ``dtype``, head in float32); returns ``path``.

        The folder replaces ``path`` only once complete. Loading gives float32 weights.
        """
        towers = {} if self.config.doc_encoder else {DOC_ENCODER: self.doc_tower}
        if not self.config.shared_encoder:
            towers[QUERY_ENCODER] = self.query_tower
        borrowed = None if self.config.shared_encoder else unchanged_word_embeddings(self.query_tower.encoder,
                                                                                     self.config.encoder)
        with atomic_dir(path) as tmp:
            for folder, tower in towers.items():
                state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tower.encoder.state_dict().items()
                         if not (borrowed and folder == QUERY_ENCODER and k == WORD_EMBEDDINGS)}
                tower.encoder.save_pretrained(tmp / folder, state_dict=state)
                tower.tokenizer.save_pretrained(tmp / folder)
            save_file(self._head_state(), tmp / HEAD_WEIGHTS)
            write_metadata(tmp, "twinbert", score_type="logit", **dataclasses.asdict(self.config),
                           encoders={"query": DOC_ENCODER if self.config.shared_encoder else QUERY_ENCODER,
                                     **({} if self.config.doc_encoder else {"doc": DOC_ENCODER})},
                           dim=self.dim, dtype=str(dtype).removeprefix("torch."), doc_fingerprint=self.fingerprint(),
                           **({"query_word_embeddings": borrowed} if borrowed else {}))
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> TwinBert:
        """Load a folder written by :meth:`save`.

        Raises:
            MissingInputError: ``path`` holds no ranker model.
            RankerError: The folder holds another model type.
        """
        path = Path(path)
        saved = read_metadata(path, "twinbert")
        # a field missing from an older folder takes its default (all such fields only set starting weights)
        fields = [f.name for f in dataclasses.fields(TwinBertConfig)]
        config = TwinBertConfig(**{name: saved[name] for name in fields if name in saved})
        with quiet_loading(bool(saved.get("query_word_embeddings"))):  # their absence is expected: filled below
            model = cls(config, device, {side: path / folder for side, folder in saved["encoders"].items()},
                        doc_fingerprint=saved["doc_fingerprint"] if config.doc_encoder else None)
        with loading(path):
            head = load_file(path / HEAD_WEIGHTS)
        if head.keys() != model._head_state().keys():
            raise RankerError(f"{path / HEAD_WEIGHTS}: weights do not match the architecture in its metadata: "
                              f"{sorted(head.keys() ^ model._head_state().keys())}")
        model.load_state_dict(head, strict=False)
        if borrowed := saved.get("query_word_embeddings"):
            borrow_word_embeddings(model.query_tower.encoder, borrowed, path)
        model.path = path
        return model

    def _head_state(self) -> dict[str, torch.Tensor]:
        """Pooling, projection and crossing weights in float32 on CPU, each shared tensor once."""
        return {n: p.detach().cpu().float().contiguous() for n, p in self.named_parameters()
                if not n.startswith(("doc_tower.encoder.", "query_tower.encoder."))}
