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


def select_topics(queries: dict[str, Query], source: str | Path, judged: str | Path | None = None,
                  first: int | None = None, qids: str | Path | None = None) -> dict[str, Query]:
    """The topics a run ranks, in ``source``'s order: those judged in the qrels ``judged``, those named in the file
    ``qids`` (one a line; each must be a topic), then the first ``first`` of what is left.

    Raises:
        RankerError: A qid of ``qids`` that ``source`` lacks, or no topic left.
    """
    if judged is not None:
        kept = {q.qid for q in load_qrels(judged)}
        queries = {qid: q for qid, q in queries.items() if qid in kept}
    if qids is not None:
        named = formats.read_ids(qids, "qid")
        if unknown := [q for q in named if q not in queries]:
            raise RankerError(f"{qids}: {len(unknown)} qid(s) are not among the topics of {source}"
                              f"{' judged in ' + str(judged) if judged else ''}: {', '.join(unknown[:5])}")
        queries = {qid: q for qid, q in queries.items() if qid in set(named)}
    if first is not None:
        queries = dict(list(queries.items())[:first])
    if not queries:
        raise RankerError(f"{source}: no queries to run")
    return queries


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
