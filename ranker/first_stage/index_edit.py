"""Changing a built Lucene index in place: add documents, delete them, compact.

Additions are indexed apart by Anserini's ``IndexCollection`` (the build's document generator, so an added
document is indexed exactly as a built one) and joined with Lucene's ``IndexWriter.addIndexes``; deletions go
through ``IndexWriter.deleteDocuments`` on the ``id`` field. Lucene hides a deleted document from every search at
once but keeps counting it in the collection statistics BM25 reads (document count, average length, document
frequencies) until its segment is merged: :func:`compact_index` (``forceMerge(1)``) purges deletions, after
which BM25 scores equal those of an index rebuilt from the remaining documents.

Every edit is one Lucene commit (a new ``segments_N``, published atomically), under the index's writer lock
(:func:`ranker.io.atomic.exclusive`; a second writer is refused in one line): an ``--add --replace`` deletes the old
versions and adds the new ones in the same commit, and an edit that fails or is stopped before it is rolled back,
so the index is as before or as after, never between. ``documents`` in ``ranker.json`` is refreshed by each edit
(before and after it); Lucene's last commit is the truth.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ranker.errors import RankerError
from ranker.first_stage.bm25 import Bm25Retriever, index_collection
from ranker.first_stage.jvm import start_jvm
from ranker.io.artifact import read_metadata, update_metadata
from ranker.io.atomic import exclusive, naming
from ranker.types import Doc


def _directory(path: Path) -> object:
    from jnius import autoclass

    return autoclass("org.apache.lucene.store.FSDirectory").open(autoclass("java.io.File")(str(path)).toPath())


def commit_step(step: str) -> None:
    """Called at each step of an edit (``indexed``, ``deleted``, ``added``, ``committed``); tests replace it to
    stop the edit there."""


@contextlib.contextmanager
def _writer(index_dir: Path) -> Iterator[object]:
    """An ``IndexWriter`` whose changes are one commit when the block ends, and rolled back (none of them kept)
    when it fails or is interrupted (``close`` would commit them: Lucene's ``commitOnClose``)."""
    start_jvm()
    from jnius import autoclass

    config = autoclass("org.apache.lucene.index.IndexWriterConfig")()
    config.setOpenMode(autoclass("org.apache.lucene.index.IndexWriterConfig$OpenMode").APPEND)
    config.setCommitOnClose(False)
    writer = autoclass("org.apache.lucene.index.IndexWriter")(_directory(index_dir), config)
    try:
        yield writer
        writer.commit()
    except BaseException:
        writer.rollback()
        raise
    writer.close()
    commit_step("committed")


@contextlib.contextmanager
def _editing(index_dir: Path) -> Iterator[None]:
    """The index's writer lock, its type checked, the work folder of an edit that was killed removed, its document
    count refreshed (a stop after the last commit may have left it stale)."""
    read_metadata(index_dir, "bm25-index")
    with exclusive(index_dir, "index"):
        for left in index_dir.parent.glob(f".{index_dir.name}.add.*"):  # an edit killed before it could clean up
            shutil.rmtree(left, ignore_errors=True)
        start_jvm()
        from jnius import JavaException

        try:
            _recount(index_dir)
            yield
        except JavaException as e:  # Lucene's IOException (a full disk): one line, the edit rolled back
            reason = (getattr(e, "innermessage", None) or str(e)).strip().splitlines()[0]
            raise RankerError(f"{index_dir}: Lucene could not write the index ({reason}): the edit was not "
                              "committed, the index is as it was") from None
        except OSError as e:
            raise RankerError(f"{e.filename or index_dir}: {e.strerror or e}: the edit was not committed, the "
                              f"index {index_dir} is as it was") from None


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


def _check_held(index_dir: Path, docnos: Sequence[str]) -> None:
    """A RankerError naming the first few of ``docnos`` (to delete) that the index lacks."""
    if not docnos:
        return
    held = set(_held(index_dir, docnos))
    unknown = [d for d in docnos if d not in held]
    if unknown:
        raise RankerError(f"{len(unknown)} docno(s) to delete are not in the index {index_dir}: "
                          f"{', '.join(unknown[:5])}")


def _delete(writer: object, docnos: Sequence[str]) -> None:
    from jnius import autoclass, cast

    term, query = autoclass("org.apache.lucene.index.Term"), autoclass("org.apache.lucene.search.TermQuery")
    for docno in docnos:  # varargs: one query a call (jnius passes no Java arrays of them)
        writer.deleteDocuments(cast("org.apache.lucene.search.Query", query(term("id", docno))))
    commit_step("deleted")


def add_to_index(docs: Iterable[Doc], index_dir: str | Path, replace: bool = False, threads: int = 2,
                 delete: Sequence[str] = ()) -> int:
    """Index ``docs`` into an existing index and delete the documents ``delete`` names, in one commit; returns its
    document count.

    Raises:
        RankerError: A docno repeated among ``docs``, one the index holds (without ``replace``), a document with
            no text (nothing could retrieve it), one to delete that the index lacks or that is also added; nothing
            is committed then.
    """
    index_dir = Path(index_dir)
    docs = list(docs)
    seen: set[str] = set()
    for doc in docs:
        if doc.docno in seen:
            raise RankerError(f"docno {doc.docno!r} is given twice among the documents to add")
        if not doc.contents.strip():
            raise RankerError(f"document {doc.docno!r} has no text: nothing could retrieve it")
        seen.add(doc.docno)
    if both := [d for d in delete if d in seen]:
        raise RankerError(f"{len(both)} docno(s) are both added and deleted: {', '.join(both[:5])}")
    with _editing(index_dir):
        held = _held(index_dir, seen)
        if held and not replace:
            raise RankerError(f"{len(held)} docno(s) are already in the index {index_dir}: {', '.join(held[:5])} "
                              "(--replace indexes them anew)")
        _check_held(index_dir, delete)
        with tempfile.TemporaryDirectory(prefix=f".{index_dir.name}.add.", dir=index_dir.parent) as work:
            corpus, added = Path(work) / "corpus", Path(work) / "index"
            corpus.mkdir()
            with naming(corpus / "docs.jsonl"), open(corpus / "docs.jsonl", "w", encoding="utf-8") as f:
                for doc in docs:
                    f.write(json.dumps({"id": doc.docno, "contents": doc.contents}, ensure_ascii=False) + "\n")
            from jnius import cast

            # the new documents are indexed apart by the build's own generator, then their segments join the
            # index in the commit that deletes the versions they replace
            index_collection(corpus, added, threads, index_dir)
            commit_step("indexed")
            with _writer(index_dir) as writer:
                _delete(writer, [*held, *delete])  # before the add: a delete never reaches the added documents
                writer.addIndexes(cast("org.apache.lucene.store.Directory", _directory(added)))  # varargs: one
                commit_step("added")
        return _recount(index_dir)


def delete_from_index(index_dir: str | Path, docnos: Sequence[str]) -> int:
    """Delete documents by docno; returns the index's document count.

    Raises:
        RankerError: A docno the index does not hold (the first few are named); nothing is deleted then.
    """
    index_dir = Path(index_dir)
    with _editing(index_dir):
        _check_held(index_dir, docnos)
        with _writer(index_dir) as writer:
            _delete(writer, list(docnos))
        return _recount(index_dir)


def compact_index(index_dir: str | Path) -> int:
    """Merge the index into one segment, purging deleted documents; returns its document count."""
    index_dir = Path(index_dir)
    with _editing(index_dir):
        with _writer(index_dir) as writer:
            writer.forceMerge(1)
        return _recount(index_dir)
