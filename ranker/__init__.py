"""ranker: BM25 first stage, cross-encoder teacher, TwinBERT student, ir-measures evaluation.

Heavy libraries (torch, pyserini, the JVM) load only when a stage that needs them is used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ranker")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from .errors import FormatError, MissingInputError, RankerError
from .formats import iter_collection, read_collection, read_qrels, read_run, read_topics, write_run
from .pipeline import Cutoff, Identity, Reranker, Stage
from .rerankers import RERANKERS, RerankerOptions, make_reranker
from .sources import iter_docs, load_qrels, load_topics
from .types import FIRST_RANK, Doc, Qrel, Query, Ranking, ScoredDoc, sort_ranking

_LAZY = {"Bm25Retriever": "bm25", "Bm25Params": "bm25", "build_index": "bm25", "evaluate": "evaluate",
         "parse_measures": "evaluate", "save_run": "runs"}


def __getattr__(name: str):
    """Names whose modules import pyserini, pandas or scipy load on first use."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ranker' has no attribute {name!r}")


__all__ = [*_LAZY,
    "FIRST_RANK", "RERANKERS", "Cutoff", "Doc", "FormatError", "Identity", "MissingInputError", "Qrel", "Query",
    "RerankerOptions",
    "RankerError", "Ranking", "Reranker", "ScoredDoc", "Stage", "__version__", "iter_collection", "iter_docs",
    "load_qrels", "load_topics", "make_reranker", "read_collection", "read_qrels", "read_run", "read_topics",
    "sort_ranking", "write_run",
]
