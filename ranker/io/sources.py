"""Where topics, qrels and documents come from: a local file, or an ir_datasets id when online.

A source is a path, or ``irds:<dataset id>`` (e.g. ``irds:beir/scifact/test``,
``irds:msmarco-passage/trec-dl-2019/judged``); ir_datasets is an optional dependency (``pip install ranker[online]``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ranker.errors import RankerError
from ranker.io import formats
from ranker.types import Doc, Qrel, Query

IRDS_PREFIX = "irds:"


def _irds(source: str):
    try:
        import ir_datasets
    except ImportError:
        raise RankerError(f"{source}: ir_datasets is not installed (pip install 'ranker[online]')") from None
    try:
        return ir_datasets.load(source.removeprefix(IRDS_PREFIX))
    except KeyError as e:
        raise RankerError(f"{source}: unknown ir_datasets id ({e})") from None


def _is_irds(source: str | Path) -> bool:
    return isinstance(source, str) and source.startswith(IRDS_PREFIX)


def load_topics(source: str | Path) -> dict[str, Query]:
    """Queries by qid from a topics file or an ir_datasets id."""
    if not _is_irds(source):
        return formats.read_topics(source)
    return {q.query_id: Query(q.query_id, q.default_text()) for q in _irds(str(source)).queries_iter()}


def load_qrels(source: str | Path) -> list[Qrel]:
    """Judgements from a qrels file or an ir_datasets id."""
    if not _is_irds(source):
        return formats.read_qrels(source)
    return [Qrel(q.query_id, q.doc_id, int(q.relevance)) for q in _irds(str(source)).qrels_iter()]


def iter_docs(source: str | Path) -> Iterator[Doc]:
    """Stream documents from a collection file or an ir_datasets id (title kept apart where it has one)."""
    if not _is_irds(source):
        yield from formats.iter_collection(source)
        return
    for d in _irds(str(source)).docs_iter():
        yield Doc(d.doc_id, getattr(d, "text", None) or d.default_text(), getattr(d, "title", "") or "")
