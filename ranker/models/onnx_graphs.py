"""ONNX graphs of an encoder: exported from PyTorch, optionally int8-quantized, checked, and cached.

A graph is cached next to its model (``MODEL/onnx/``; when that folder is not writable, under ``$RANKER_CACHE`` or
``~/.cache/ranker``) in a folder named by the encoder's fingerprint (for TwinBERT's query tower
:meth:`TwinBert.query_fingerprint`, which covers the query cap), the precision and the export recipe, with a
``ranker.json`` holding the full fingerprint and the graph's SHA-256. A graph is used only if both match; otherwise
(the model changed, the file was altered, an export was cut off) it is exported again, and every new graph is
checked against the PyTorch module on probe queries before use.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ranker.cpu import int8_reduce_range
from ranker.errors import RankerError
from ranker.io.artifact import read_metadata, write_metadata
from ranker.io.atomic import atomic_dir
from ranker.models.hf import TOKENIZER_PROBE

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

    batch = source.tokenizer(list(PROBE_QUERIES), padding=True, truncation=True, max_length=source.max_length,
                             return_tensors="np")
    ids, mask = batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64)
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
