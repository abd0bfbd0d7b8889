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

An exported graph is cached next to the model (``MODEL/onnx/``; when that folder is not writable, under
``$RANKER_CACHE`` or ``~/.cache/ranker``) in a folder named by the query tower's fingerprint
(:meth:`TwinBert.query_fingerprint`, which covers the query cap), the precision and the export recipe, with a
``ranker.json`` holding the full fingerprint and the graph's SHA-256. A graph is used only if both match; otherwise
(the model changed, the file was altered, an export was cut off) it is exported again, and every new graph is
checked against the PyTorch tower on probe queries before use.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ranker.cpu import int8_reduce_range, native_bfloat16
from ranker.errors import RankerError
from ranker.io.artifact import read_metadata, write_metadata
from ranker.io.atomic import atomic_dir
from ranker.models.config import DEFAULT_QUERY_BACKEND, QUERY_BACKENDS
from ranker.models.hf import TOKENIZER_PROBE, length_order
from ranker.models.layers import Tower

log = logging.getLogger(__name__)
GRAPH_TYPE = "onnx-query-tower"
GRAPH_FILE = "model.onnx"
OPSET = 17
PROBE_QUERIES = (TOKENIZER_PROBE, "what is the capital of france", "how long does it take to boil an egg",
                 "a longer question about the side effects of medication that people take for high blood pressure")
FLOAT_FFN_LAYERS = 4
"""int8: the feed-forward output projections of the first layers stay float32 (their GELU inputs carry outliers
that per-tensor activation quantization blurs most; measured on SciFact queries, docs/experiments.md "Query
encoding")."""
RECIPE = {"float32": {"opset": OPSET}, "int8": {"opset": OPSET, "weights": "int8 per-channel", "activations":
                                               "uint8 dynamic", "float_ffn_layers": FLOAT_FFN_LAYERS}}
"""How each graph is made; a cached graph made otherwise is stale."""
CACHED_GRAPHS = 8
"""Graphs kept per cache folder (by fingerprint, precision and recipe; the least recently used go first): models
sharing ``$RANKER_CACHE``, and one model's query caps, do not evict each other's graphs."""
TOLERANCE = {"float32": 1e-3}  # largest absolute difference allowed against the PyTorch tower
MIN_COSINE = {"int8": 0.98}  # smallest cosine allowed against the PyTorch tower


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


def cache_root(folder: str | Path | None) -> Path:
    """Where exported graphs of the model in ``folder`` go: ``FOLDER/onnx`` when that folder is writable, else
    ``$RANKER_CACHE/onnx`` (default ``~/.cache/ranker/onnx``)."""
    if folder is not None and os.path.isdir(folder) and os.access(folder, os.W_OK):
        return Path(folder) / "onnx"
    return Path(os.environ.get("RANKER_CACHE") or Path.home() / ".cache" / "ranker") / "onnx"


@dataclass(frozen=True)
class GraphSource:
    """What an ONNX graph is exported from: ``module(input_ids, attention_mask)`` gives one vector per row.

    Attributes:
        module: The PyTorch module (a tower's ``embed``, a bi-encoder's pooled encoder).
        tokenizer: Its Hugging Face tokenizer (fast).
        max_length: Tokens kept per text.
        fingerprint: SHA-256 of what its vectors depend on; a cached graph of another fingerprint is stale.
        root: The cache folder (:func:`cache_root`).
        prefix: Names the graph's kind in its folder name (``query``, ``biencoder``).
        float_ffn_layers: int8: how many first layers keep their feed-forward output projection in float32
            (``None``: :data:`FLOAT_FFN_LAYERS`).
    """

    module: torch.nn.Module
    tokenizer: Any
    max_length: int
    fingerprint: str
    root: Path
    prefix: str = "query"
    float_ffn_layers: int | None = None


def query_graph(model: Any, precision: str, cache: str | Path | None = None) -> Path:
    """The ONNX graph of a TwinBERT ``model``'s query tower in ``precision`` (``float32`` or ``int8``)
    (:func:`export_graph`)."""
    return export_graph(query_source(model, cache), precision)


def query_source(model: Any, cache: str | Path | None = None) -> GraphSource:
    """A TwinBERT ``model``'s query tower as a :class:`GraphSource`, cached beside the model or in ``cache``."""
    return GraphSource(_Embed(model.query_tower), model.query_tower.tokenizer, model.config.query_max_length,
                       model.query_fingerprint(), Path(cache) if cache is not None else cache_root(model.path))


def export_graph(source: GraphSource, precision: str) -> Path:
    """The ONNX graph of ``source`` in ``precision`` (``float32`` or ``int8``): the cached one if its fingerprint
    and hash match, else exported (and quantized) now, checked and cached.

    Raises:
        RankerError: The exported graph disagrees with the PyTorch module on the probe queries.
    """
    root, fingerprint = source.root, source.fingerprint
    made = recipe_of(source, precision)
    recipe = hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()[:8]
    folder = root / f"{source.prefix}-{fingerprint[:16]}-{precision}-{recipe}"
    reason = _stale(folder, fingerprint, made)
    if reason is None:
        os.utime(folder)  # most recently used: kept longest
        return folder / GRAPH_FILE
    log.info("exporting the %s encoder to ONNX (%s; %s) -> %s", source.prefix, precision, reason, folder)
    with atomic_dir(folder) as tmp:
        _export(source, tmp / "float32.onnx")
        if precision == "int8":
            _quantize(tmp / "float32.onnx", tmp / GRAPH_FILE, made["float_ffn_layers"],
                      made.get("reduce_range", False))
            (tmp / "float32.onnx").unlink()
        else:
            (tmp / "float32.onnx").rename(tmp / GRAPH_FILE)
        _check(source, tmp / GRAPH_FILE, precision)
        import onnxruntime

        write_metadata(tmp, GRAPH_TYPE, fingerprint=fingerprint, precision=precision, recipe=made,
                       sha256=_sha256(tmp / GRAPH_FILE), torch=torch.__version__, onnxruntime=onnxruntime.__version__)
    cached = sorted((f for f in root.glob("*-*-*-*") if f.is_dir() and f != folder and (f / "ranker.json").is_file()),
                    key=lambda f: f.stat().st_mtime)
    for old in cached[:max(0, len(cached) + 1 - CACHED_GRAPHS)]:  # the least recently used beyond the limit
        shutil.rmtree(old, ignore_errors=True)
    return folder / GRAPH_FILE


def load_graph(folder: str | Path) -> Any:
    """An ONNX Runtime session over an exported graph folder (checked against its recorded hash).

    Raises:
        RankerError: The folder holds no graph, or the graph changed since export.
    """
    folder = Path(folder)
    meta = read_metadata(folder, GRAPH_TYPE)
    if meta.get("sha256") != _sha256(folder / GRAPH_FILE):
        raise RankerError(f"{folder}: the graph file changed since export (its SHA-256 differs from ranker.json)")
    return open_session(folder / GRAPH_FILE)


def open_session(graph: Path, options: Any = None) -> Any:
    """An ONNX Runtime CPU session over ``graph``.

    Raises:
        RankerError: ONNX Runtime cannot load it (a forged or foreign file with a matching hash): one line naming
            the file and how to make it anew.
    """
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for every kind of bad graph
        raise RankerError(f"{graph}: not a graph ONNX Runtime can load ({str(e).splitlines()[0][:200]}): delete "
                          f"{graph.parent} and it is exported again") from None


def _stale(folder: Path, fingerprint: str, recipe: dict) -> str | None:
    """Why the cached graph in ``folder`` cannot be used, or ``None`` when it can."""
    if not (folder / GRAPH_FILE).is_file():
        return "none cached"
    try:
        meta = read_metadata(folder, GRAPH_TYPE)
    except RankerError:
        return "unreadable metadata"
    if meta.get("fingerprint") != fingerprint:
        return "exported from another model"
    if meta.get("recipe") != recipe:
        return "made by another recipe"
    if meta.get("sha256") != _sha256(folder / GRAPH_FILE):
        return "the graph file changed since export"
    return None


class _Embed(torch.nn.Module):
    """A tower's :meth:`ranker.models.layers.Tower.embed` as its forward, for export."""

    def __init__(self, tower: Tower):
        super().__init__()
        self.tower = tower

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.tower.embed(input_ids, attention_mask)


def _export(source: GraphSource, path: Path) -> None:
    import warnings

    probe = source.tokenizer(list(PROBE_QUERIES[:2]), padding=True, return_tensors="pt")
    module = copy.deepcopy(source.module).float().cpu().eval()  # a copy: the model may live on a GPU
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}, "vector": {0: "batch"}}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (probe["input_ids"], probe["attention_mask"]), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["vector"],
                          dynamic_axes=axes, opset_version=OPSET)


def recipe_of(source: GraphSource, precision: str) -> dict:
    """How ``source``'s graph in ``precision`` is made: :data:`RECIPE`, with the source's own count of
    float feed-forward output layers for int8, and 7-bit weights where :func:`ranker.cpu.int8_reduce_range` says so."""
    recipe = dict(RECIPE[precision])
    if precision == "int8" and source.float_ffn_layers is not None:
        recipe["float_ffn_layers"] = source.float_ffn_layers
    if precision == "int8" and int8_reduce_range():
        recipe["reduce_range"] = True
    return recipe


def _quantize(source: Path, target: Path, float_ffn_layers: int, reduce_range: bool) -> None:
    import logging

    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    kept = [node.name for node in onnx.load(str(source)).graph.node if node.op_type == "MatMul" and any(
        f"layer.{i}/output/dense" in node.name for i in range(float_ffn_layers))]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs its advice to pre-process as a warning on the root logger
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=reduce_range, op_types_to_quantize=["MatMul"], nodes_to_exclude=kept,
                         extra_options={"DefaultTensorType": TensorProto.FLOAT})
    finally:
        root.setLevel(level)  # everyone else's warnings are theirs to show


def _check(source: GraphSource, graph: Path, precision: str) -> None:
    """The graph's vectors for the probe queries against the PyTorch module's, one batch with padding."""
    import onnxruntime as ort

    ids, mask, _ = QueryTokenizer(source.tokenizer, source.max_length)(PROBE_QUERIES)
    got = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"]).run(
        ["vector"], {"input_ids": ids, "attention_mask": mask})[0]
    with torch.inference_mode():
        device = next(source.module.parameters()).device
        want = source.module(torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)).float().cpu().numpy()
    if precision in TOLERANCE:
        gap = float(np.abs(got - want).max())
        ok, found = gap <= TOLERANCE[precision], f"largest difference {gap:.2g}"
    else:
        cosine = float(((got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)).min())
        ok, found = cosine >= MIN_COSINE[precision], f"smallest cosine {cosine:.4f}"
    if not ok:
        raise RankerError(f"the exported {precision} {source.prefix} graph disagrees with the PyTorch "
                          f"{source.prefix} encoder on the probe queries ({found}); it was not cached")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
