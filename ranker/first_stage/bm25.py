"""BM25 first stage over a Lucene index built in-process with Anserini (through Pyserini).

The index stores each document's raw JSON (``id``, ``contents``) so later stages fetch passage text by id, and
``ranker.json`` (:mod:`ranker.io.artifact`, type ``bm25-index``: source, counts, Java version).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tqdm.auto import tqdm

from ranker.errors import MissingInputError, RankerError
from ranker.first_stage.jvm import start_jvm
from ranker.io.artifact import read_metadata, write_metadata
from ranker.io.atomic import atomic_dir, exclusive, naming
from ranker.pipeline import Stage
from ranker.types import Doc, Query, Ranking, ScoredDoc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexStats:
    documents: int
    seconds: float
    empty: int = 0  # documents with no text, left out (Anserini indexes none; BM25 could never retrieve them)


def build_index(docs: Iterable[Doc], index_dir: str | Path, *, threads: int = 2, source: str = "") -> IndexStats:
    """Index documents (contents = title + " " + text) into ``index_dir``, storing raw text.

    The documents are streamed to a Pyserini JSONL file, indexed by Anserini's ``IndexCollection`` into a
    temporary folder, which replaces ``index_dir`` only when indexing succeeded; an existing ``index_dir`` must be
    empty or an index this project built (anything else is refused before any work, never deleted), and is not
    being edited (the writer lock of :mod:`ranker.first_stage.index_edit`). A document
    with no text is left out and counted (``IndexStats.empty``, ``empty_documents`` in the index metadata):
    Anserini skips such documents, and BM25 could never retrieve them.
    """
    _check_replaceable(Path(index_dir))
    start = time.perf_counter()
    with exclusive(index_dir, "index"), atomic_dir(index_dir) as lucene_dir, tempfile.TemporaryDirectory(
            prefix=f".{Path(index_dir).name}.corpus.", dir=Path(index_dir).parent) as corpus:
        corpus_dir = Path(corpus)
        count = empty = 0
        with naming(corpus_dir / "docs.jsonl"), open(corpus_dir / "docs.jsonl", "w", encoding="utf-8") as f:
            for doc in tqdm(docs, desc="collection", unit=" docs", mininterval=1.0):
                if not doc.contents.strip():
                    empty += 1
                    continue
                f.write(json.dumps({"id": doc.docno, "contents": doc.contents}, ensure_ascii=False) + "\n")
                count += 1
        if count == 0:
            raise RankerError(f"{source or 'collection'}: no documents to index")
        log.info("indexing %d documents with Anserini (%d threads)", count, threads)
        index_collection(corpus_dir, Path(lucene_dir), threads, Path(index_dir))
        indexed = Bm25Retriever(lucene_dir).num_docs
        if indexed != count:
            raise RankerError(f"Anserini indexed {indexed} of {count} documents from {source or 'the collection'}")
        seconds = time.perf_counter() - start
        write_metadata(lucene_dir, "bm25-index", source=source, documents=count, empty_documents=empty,
                       seconds=round(seconds, 2), contents="title + ' ' + text", java=start_jvm())
    return IndexStats(count, seconds, empty)


def index_collection(corpus_dir: Path, index_dir: Path, threads: int, target: Path) -> None:
    """Anserini's ``IndexCollection`` over a folder of Pyserini JSONL into ``index_dir``, its Java log kept off the
    terminal; a failure (a full disk) is one line naming ``target``, the index being made.

    Raises:
        RankerError: Anserini failed or logged an error.
    """
    start_jvm()
    from jnius import JavaException, autoclass

    failure = None
    with tempfile.TemporaryFile() as java_log:
        sys.stdout.flush()
        saved = [os.dup(1), os.dup(2)]
        for fd in (1, 2):  # the JVM writes its log and stack traces to the process's own descriptors
            os.dup2(java_log.fileno(), fd)
        try:
            autoclass("io.anserini.index.IndexCollection").main(anserini_args(corpus_dir, index_dir, threads))
        except JavaException as e:
            failure = e
        finally:
            for fd, copy in zip((1, 2), saved):
                os.dup2(copy, fd)
                os.close(copy)
        java_log.seek(0)
        errors = [line for line in java_log.read().decode("utf-8", "replace").splitlines()
                  if "Exception: " in line or " ERROR " in line]
    if failure is not None or errors:
        cause = next((line.split("Exception: ", 1)[1] for line in errors if "IOException: " in line),
                     errors[0] if errors else str(failure).splitlines()[0])
        raise RankerError(f"{target}: Anserini could not write the index ({cause.strip()}); nothing was kept")


def anserini_args(corpus_dir: Path, index_dir: Path, threads: int) -> list[str]:
    """``IndexCollection``'s arguments for a folder of Pyserini JSONL: positions, document vectors, raw text."""
    return ["-collection", "JsonCollection", "-generator", "DefaultLuceneDocumentGenerator",
            "-input", str(corpus_dir), "-index", str(index_dir), "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw", "-quiet"]


def _check_replaceable(index_dir: Path) -> None:
    """Refuse to replace a folder that is neither empty nor an index of this project."""
    if not index_dir.exists() or (index_dir.is_dir() and not any(index_dir.iterdir())):
        return
    try:
        read_metadata(index_dir, "bm25-index")
    except RankerError:
        raise RankerError(f"{index_dir} exists and is not an index built by 'rank index': it is left as it is "
                          "(choose another --index, or remove it yourself)") from None


@dataclass(frozen=True)
class Bm25Config:
    """BM25 settings; the defaults are Anserini's (not Lucene's)."""

    k1: float = 0.9
    b: float = 0.4
    k: int = 1000
    threads: int = 2
    remove_query_id: bool = False
    """Drop a hit whose docid equals the query id (BEIR's convention for corpora that contain the queries)."""


MAX_QUERY_TERMS = 2**31 - 1
"""Lucene's limit on a query's terms, raised from its default of 1,024: BM25 reads every word of a query."""


class Bm25Retriever(Stage):
    """BM25 retrieval over a Lucene index (a first stage), with access to the stored document text."""

    name = "bm25"

    def __init__(self, index_dir: str | Path, params: Bm25Config = Bm25Config()):
        index_dir = Path(index_dir)
        if not index_dir.is_dir():
            raise MissingInputError(f"{index_dir}: no such index folder (build one with 'rank index')")
        start_jvm()
        from jnius import autoclass
        from pyserini.search.lucene import LuceneSearcher

        # Lucene refuses a query of more than 1,024 terms by default; a long query is the user's to make
        autoclass("org.apache.lucene.search.IndexSearcher").setMaxClauseCount(MAX_QUERY_TERMS)
        try:
            self._searcher = LuceneSearcher(str(index_dir))
        except Exception as e:  # jnius raises JavaException for a folder that is not a Lucene index
            raise MissingInputError(f"{index_dir}: not a Lucene index ({str(e).splitlines()[0]})") from None
        self._searcher.set_bm25(params.k1, params.b)
        self.index_dir = index_dir
        self.params = params
        self._reader = self._similarity = None  # opened on the first score_docs

    @property
    def num_docs(self) -> int:
        return int(self._searcher.num_docs)

    def search(self, queries: Mapping[str, Query], *, batch_size: int = 64, progress: bool = True,
               k: int | None = None) -> Ranking:
        """Top ``k`` per query (default: the config's), scores as Lucene returns them (float32 BM25)."""
        p = replace(self.params, k=k) if k is not None else self.params
        extra = 1 if p.remove_query_id else 0
        qids = list(queries)
        ranking: Ranking = {}
        with tqdm(total=len(qids), desc="BM25", unit=" queries", disable=not progress) as bar:
            for i in range(0, len(qids), batch_size):
                batch = qids[i : i + batch_size]
                hits = self._searcher.batch_search([queries[q].text for q in batch], batch, k=p.k + extra,
                                                   threads=p.threads)
                for qid in batch:
                    docs = [ScoredDoc(qid, h.docid, float(h.score)) for h in hits[qid]
                            if not (p.remove_query_id and h.docid == qid)]
                    ranking[qid] = docs[: p.k]
                bar.update(len(batch))
        return ranking

    def transform(self, queries: Mapping[str, Query], candidates: Ranking | None) -> Ranking:
        if candidates is not None:
            raise RankerError("BM25 is a first stage: it retrieves, it does not rerank candidates")
        return self.search(queries)

    def score_docs(self, query: str, docnos: Iterable[str]) -> dict[str, float]:
        """BM25's score of ``query`` for each of ``docnos`` (the score :meth:`search` would give it, also for a
        document outside the top ``k``; 0 for one that shares no term with the query or is not in the index)."""
        if self._reader is None:
            from jnius import autoclass
            from pyserini.index.lucene import LuceneIndexReader

            self._reader = LuceneIndexReader(str(self.index_dir))
            self._similarity = autoclass("org.apache.lucene.search.similarities.BM25Similarity")(
                float(self.params.k1), float(self.params.b))
        return {d: float(self._reader.compute_query_document_score(d, query, self._similarity)) for d in docnos}

    def text(self, docno: str) -> str:
        """Stored contents of a document; an unknown docno is an error."""
        doc = self._searcher.doc(docno)
        if doc is None:
            raise RankerError(f"{self.index_dir}: document {docno!r} is not in the index")
        return json.loads(doc.raw())["contents"]

    def missing(self, docnos: Iterable[str]) -> list[str]:
        """The ``docnos`` the index does not hold, in the order given."""
        return [d for d in docnos if self._searcher.doc(d) is None]

    def texts(self) -> Mapping[str, str]:
        """A read-only ``docno -> contents`` view of the stored text, for rerankers."""
        return IndexTexts(self)

    def config(self) -> dict:
        return {"stage": self.name, "index": str(self.index_dir), **asdict(self.params)}


class IndexTexts(Mapping[str, str]):
    """``docno -> contents`` read from a Lucene index's stored raw JSON, one lookup at a time."""

    def __init__(self, retriever: Bm25Retriever):
        self._retriever = retriever

    def __getitem__(self, docno: str) -> str:
        return self._retriever.text(docno)

    def __iter__(self) -> Iterator[str]:
        raise TypeError("an index's documents are looked up by id, not listed")

    def __len__(self) -> int:
        return self._retriever.num_docs
