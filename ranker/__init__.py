"""ranker: BM25 first stage, cross-encoder teacher, TwinBERT student, ir-measures evaluation.

The package reads in pipeline order: ``ranker.io`` (formats, data sources, datasets, artifacts),
``ranker.first_stage`` (BM25), ``ranker.rerank`` (models and rerankers), ``ranker.eval`` (evaluation,
benchmarks, reports), ``ranker.train`` (teacher training, distillation), ``ranker.cli``. Heavy libraries
(torch, pyserini, the JVM) load only when a stage that needs them is used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ranker._version import __version__
from ranker.errors import FormatError, MissingInputError, RankerError
from ranker.io.artifact import ARTIFACTS, artifact_type
from ranker.io.formats import iter_collection, read_collection, read_qrels, read_run, read_topics, write_run
from ranker.io.sources import iter_docs, load_qrels, load_topics
from ranker.models.loading import resolve_model
from ranker.pipeline import Cutoff, Identity, Reranker, Stage
from ranker.rerank.registry import RERANKERS, RerankerConfig, make_reranker
from ranker.types import FIRST_RANK, Doc, Qrel, Query, Ranking, ScoredDoc, sort_ranking

_LAZY = {
    "Bm25Retriever": "ranker.first_stage.bm25", "Bm25Config": "ranker.first_stage.bm25",
    "build_index": "ranker.first_stage.bm25", "PipelineConfig": "ranker.rerank.assembly",
    "build_pipeline": "ranker.rerank.assembly", "evaluate": "ranker.eval.evaluate",
    "parse_measures": "ranker.measures", "save_run": "ranker.io.runs", "datasets": "ranker.io.datasets",
}



def load(path: str | Path) -> Any:
    """Open any artifact the project writes, by the type its metadata names (:mod:`ranker.io.artifact`).

    A cross-encoder or TwinBERT folder gives the model, an embedding store the store, a BM25 index its
    retriever, a teacher-score cache its scores (a DataFrame), an ensemble file its description, an exported
    query graph its ONNX Runtime session. A shipped model may be named alone (``ranker.load("twinbert-v2")``).
    """
    path = resolve_model(path)
    module, attribute = ARTIFACTS[artifact_type(path)][0].split(":")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target(path)


def __getattr__(name: str):
    """Names whose modules import pyserini, pandas or scipy load on first use."""
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return module if name == "datasets" else getattr(module, name)
    raise AttributeError(f"module 'ranker' has no attribute {name!r}")


__all__ = [*_LAZY,
    "FIRST_RANK", "RERANKERS", "Cutoff", "Doc", "FormatError", "Identity", "MissingInputError", "Qrel", "Query",
    "RankerError", "Ranking", "Reranker", "RerankerConfig", "ScoredDoc", "Stage", "__version__", "artifact_type",
    "iter_collection", "iter_docs", "load", "load_qrels", "load_topics", "make_reranker", "read_collection",
    "read_qrels", "read_run", "read_topics", "sort_ranking", "write_run",
]
