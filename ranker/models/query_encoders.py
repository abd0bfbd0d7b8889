"""TwinBERT's query tower behind one interface, on four backends: texts in, float32 query vectors out.

* ``torch``: the PyTorch model in float32, the reference every other backend is measured against;
* ``torch-bf16``: a bfloat16 copy of the tower; faster only on a CPU with native bfloat16 (AVX512-BF16, AMX),
  so on any other CPU it says so and runs float32 instead (measured 2x slower than float32 there);
* ``onnx``: the tower (encoder, pooling, projection) exported to ONNX and run by ONNX Runtime, float32;
* ``onnx-int8``: that graph with its matrix multiplies dynamically quantized to int8 (per-channel weights; 7-bit
  on an x86 CPU without VNNI, see :func:`ranker.cpu.int8_reduce_range`).

Every backend tokenizes with the Rust tokenizer called directly (:class:`QueryTokenizer`: the Python wrapper's
per-call overhead is gone, the ids are the same), pads a batch to its longest query only, and counts the
queries it truncated (``truncated``).

An exported graph is cached and checked as :mod:`ranker.models.onnx_graphs` describes.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ranker.cpu import native_bfloat16
from ranker.errors import RankerError
from ranker.models.config import DEFAULT_QUERY_BACKEND, QUERY_BACKENDS
from ranker.models.hf import length_order
from ranker.models.layers import Tower
from ranker.models.onnx_graphs import GraphSource, cache_root, export_graph, open_session

log = logging.getLogger(__name__)
class QueryEncoder(Protocol):
    """What a reranker or the server needs from a query tower."""

    backend: str
    truncated: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One float32 vector per text, shape ``(len(texts), dim)``."""
        ...


class QueryTokenizer:
    """The model's fast (Rust) tokenizer called directly: truncation to ``max_length``, padding to the longest
    text of a batch; the ids equal the ``transformers`` wrapper's with ``truncation=True, padding=True``."""

    def __init__(self, tokenizer: Any, max_length: int):
        from tokenizers import Tokenizer

        if not getattr(tokenizer, "is_fast", False):
            raise RankerError("the ONNX and fast query paths need a fast (Rust) tokenizer: tokenizer.json")
        self.tokenizer = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding(pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
        self.max_length = max_length

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, int]:
        """``input_ids`` and ``attention_mask`` (int64, ``(len(texts), longest)``) and how many were truncated."""
        encodings = ([self.tokenizer.encode(texts[0])] if len(texts) == 1
                     else self.tokenizer.encode_batch(list(texts)))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask, sum(bool(e.overflowing) for e in encodings)


def token_parts(mask: Any, max_tokens: int) -> Iterator[tuple[slice, int]]:
    """A padded batch's rows in parts of at most ``max_tokens`` padded tokens: each part's rows, and its longest
    text's length (the part is cut to it: less padding). ``mask``: numpy or torch, ``(rows, longest)``."""
    step = max(1, max_tokens // mask.shape[1])
    for start in range(0, len(mask), step):
        rows = slice(start, start + step)
        yield rows, int(mask[rows].sum(1).max())


class _BatchedEncoder:
    """Shared by the backends: tokenize in batches of similar length, run ``_forward``, count truncations. With
    ``max_tokens``, a batch whose padded tokens are more is run in parts of at most that many (long passages:
    attention's memory grows with the square of the length, and ONNX Runtime's arena keeps the largest)."""

    backend = ""

    def __init__(self, tokenizer: Any, max_length: int, batch_size: int, max_tokens: int | None = None):
        self.tokenize = QueryTokenizer(tokenizer, max_length)
        self.batch_size, self.truncated, self.max_tokens = batch_size, 0, max_tokens

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) <= self.batch_size:
            return self._run(texts)
        order = length_order(texts)
        parts = [self._run([texts[i] for i in order[s:s + self.batch_size]])
                 for s in range(0, len(order), self.batch_size)]
        out = np.empty((len(texts), parts[0].shape[1]), dtype=np.float32)
        out[order] = np.concatenate(parts)
        return out

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        ids, mask, truncated = self.tokenize(texts)
        self.truncated += truncated
        if self.max_tokens is None or ids.size <= self.max_tokens:
            return self._forward(ids, mask)
        return np.concatenate([self._forward(ids[rows, :width], mask[rows, :width])
                               for rows, width in token_parts(mask, self.max_tokens)])

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class TorchQueryEncoder(_BatchedEncoder):
    """The PyTorch tower, float32 or (``bfloat16=True``, where the CPU supports it natively) a bfloat16 copy."""

    def __init__(self, tower: Tower, max_length: int, batch_size: int = 64, bfloat16: bool = False):
        super().__init__(tower.tokenizer, max_length, batch_size)
        self.backend = "torch"
        if bfloat16 and not native_bfloat16():
            log.warning("this CPU has no native bfloat16 (AVX512-BF16 or AMX), where bfloat16 runs slower than "
                        "float32: the query tower runs in float32 (backend torch)")
        elif bfloat16:
            tower, self.backend = copy.deepcopy(tower).to(torch.bfloat16), "torch-bf16"
        self.tower = tower

    @torch.inference_mode()
    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        device = next(self.tower.parameters()).device
        vectors = self.tower.embed(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device))
        return vectors.float().cpu().numpy()


class OnnxQueryEncoder(_BatchedEncoder):
    """An exported graph (:func:`export_graph`) on ONNX Runtime's CPU provider, with as many threads as torch uses.

    int8 runs one text a pass: dynamic quantization scales activations per tensor, so in a batch a text's
    vector would depend on the texts beside it (a server's batches, a run's order); alone, it never does.
    """

    def __init__(self, source: GraphSource, int8: bool = False, batch_size: int = 64, max_tokens: int | None = None):
        import onnxruntime as ort

        super().__init__(source.tokenizer, source.max_length, 1 if int8 else batch_size, max_tokens)
        self.backend = "onnx-int8" if int8 else "onnx"
        self.graph = export_graph(source, "int8" if int8 else "float32")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = open_session(self.graph, options)

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(["vector"], {"input_ids": ids, "attention_mask": mask})[0]


def make_query_encoder(model: Any, backend: str = DEFAULT_QUERY_BACKEND, batch_size: int = 64,
                       cache: str | Path | None = None) -> QueryEncoder:
    """The query encoder of a :class:`ranker.models.twinbert.TwinBert` on ``backend`` (one of
    :data:`QUERY_BACKENDS`); ONNX backends run on CPU, so a model on a GPU gets the ``torch`` backend's speed
    only from ``torch``."""
    if backend not in QUERY_BACKENDS:
        raise RankerError(f"query backend must be one of {', '.join(QUERY_BACKENDS)}, not {backend!r}")
    if backend.startswith("torch"):
        return TorchQueryEncoder(model.query_tower, model.config.query_max_length, batch_size,
                                 bfloat16=backend == "torch-bf16")
    return OnnxQueryEncoder(query_source(model, cache), int8=backend == "onnx-int8", batch_size=batch_size)


def query_graph(model: Any, precision: str, cache: str | Path | None = None) -> Path:
    """The ONNX graph of a TwinBERT ``model``'s query tower in ``precision`` (``float32`` or ``int8``)
    (:func:`export_graph`)."""
    return export_graph(query_source(model, cache), precision)


def query_source(model: Any, cache: str | Path | None = None) -> GraphSource:
    """A TwinBERT ``model``'s query tower as a :class:`GraphSource`, cached beside the model or in ``cache``."""
    return GraphSource(_Embed(model.query_tower), model.query_tower.tokenizer, model.config.query_max_length,
                       model.query_fingerprint(), Path(cache) if cache is not None else cache_root(model.path))


class _Embed(torch.nn.Module):
    """A tower's :meth:`ranker.models.layers.Tower.embed` as its forward, for export."""

    def __init__(self, tower: Tower):
        super().__init__()
        self.tower = tower

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tower.embed(input_ids, attention_mask)


