"""Changing a built Lucene index in place: add documents, delete them, compact.

Additions are indexed apart by Anserini's ``IndexCollection`` (the build's document generator, so an added
document is indexed exactly as a built one) and joined with Lucene's ``IndexWriter.addIndexes``; deletions go
through ``IndexWriter.deleteDocuments`` on the ``id`` field. Lucene hides a deleted document from every search at
once but keeps counting it in the collection statistics BM25 reads (document count, average length, document
frequencies) until its segment is merged: :func:`compact_index` (``forceMerge(1)``) purges deletions, after
which BM25 scores equal those of an index rebuilt from the remaining documents.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ranker.errors import RankerError
from ranker.first_stage.bm25 import Bm25Retriever, anserini_args
from ranker.first_stage.jvm import start_jvm
from ranker.io.artifact import read_metadata, update_metadata
from ranker.types import Doc


def _directory(path: Path) -> object:
    from jnius import autoclass

    return autoclass("org.apache.lucene.store.FSDirectory").open(autoclass("java.io.File")(str(path)).toPath())


@contextlib.contextmanager
def _writer(index_dir: Path) -> Iterator[object]:
    start_jvm()
    from jnius import autoclass

    config = autoclass("org.apache.lucene.index.IndexWriterConfig")()
    config.setOpenMode(autoclass("org.apache.lucene.index.IndexWriterConfig$OpenMode").APPEND)
    writer = autoclass("org.apache.lucene.index.IndexWriter")(_directory(index_dir), config)
    try:
        yield writer
        writer.commit()
    finally:
        writer.close()


def _recount(index_dir: Path) -> int:
    """The index's live documents, written into its metadata."""
    from jnius import autoclass

    reader = autoclass("org.apache.lucene.index.DirectoryReader").open(_directory(index_dir))
    count = int(reader.numDocs())  # live documents (pyserini's num_docs counts deleted ones until a merge)
    reader.close()
    update_metadata(index_dir, "bm25-index", documents=count)
    return count


def _held(index_dir: Path, docnos: Iterable[str]) -> list[str]:
    searcher = Bm25Retriever(index_dir)._searcher
    try:
        return [d for d in docnos if searcher.doc(d) is not None]
    finally:
        searcher.close()  # no reader may keep segments mapped that a merge is about to delete


def _delete(index_dir: Path, docnos: Sequence[str]) -> None:
    from jnius import autoclass, cast

    term, query = autoclass("org.apache.lucene.index.Term"), autoclass("org.apache.lucene.search.TermQuery")
    with _writer(index_dir) as writer:
        for docno in docnos:  # varargs: one query a call (jnius passes no Java arrays of them)
            writer.deleteDocuments(cast("org.apache.lucene.search.Query", query(term("id", docno))))


def add_to_index(docs: Iterable[Doc], index_dir: str | Path, replace: bool = False, threads: int = 2) -> int:
    """Index ``docs`` into an existing index; returns its document count.

    Raises:
        RankerError: A docno repeated among ``docs``, one the index holds (without ``replace``), or a document
            with no text (nothing could retrieve it).
    """
    index_dir = Path(index_dir)
    read_metadata(index_dir, "bm25-index")
    docs = list(docs)
    seen: set[str] = set()
    for doc in docs:
        if doc.docno in seen:
            raise RankerError(f"docno {doc.docno!r} is given twice among the documents to add")
        if not doc.contents.strip():
            raise RankerError(f"document {doc.docno!r} has no text: nothing could retrieve it")
        seen.add(doc.docno)
    held = _held(index_dir, seen)
    if held and not replace:
        raise RankerError(f"{len(held)} docno(s) are already in the index {index_dir}: {', '.join(held[:5])} "
                          "(--replace indexes them anew)")
    if held:
        _delete(index_dir, held)
    with tempfile.TemporaryDirectory(prefix=f".{index_dir.name}.add.", dir=index_dir.parent) as work:
        corpus, added = Path(work) / "corpus", Path(work) / "index"
        corpus.mkdir()
        with open(corpus / "docs.jsonl", "w", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps({"id": doc.docno, "contents": doc.contents}, ensure_ascii=False) + "\n")
        from jnius import autoclass

        # the new documents are indexed apart by the build's own generator, then their segments join the index
        autoclass("io.anserini.index.IndexCollection").main(anserini_args(corpus, added, threads))
        with _writer(index_dir) as writer:
            from jnius import cast

            writer.addIndexes(cast("org.apache.lucene.store.Directory", _directory(added)))  # varargs: one
    return _recount(index_dir)


def delete_from_index(index_dir: str | Path, docnos: Sequence[str]) -> int:
    """Delete documents by docno; returns the index's document count.

    Raises:
        RankerError: A docno the index does not hold (the first few are named); nothing is deleted then.
    """
    index_dir = Path(index_dir)
    read_metadata(index_dir, "bm25-index")
    held = set(_held(index_dir, docnos))
    unknown = [d for d in docnos if d not in held]
    if unknown:
        raise RankerError(f"{len(unknown)} docno(s) to delete are not in the index {index_dir}: "
                          f"{', '.join(unknown[:5])}")
    _delete(index_dir, list(docnos))
    return _recount(index_dir)


def compact_index(index_dir: str | Path) -> int:
    """Merge the index into one segment, purging deleted documents; returns its document count."""
    index_dir = Path(index_dir)
    read_metadata(index_dir, "bm25-index")
    with _writer(index_dir) as writer:
        writer.forceMerge(1)
    return _recount(index_dir)
