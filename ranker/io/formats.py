"""Readers and writers for the standard IR file formats.

Topics: TSV ``qid<TAB>text`` or BEIR ``queries.jsonl``. Qrels: TREC (4 columns) or BEIR TSV with header.
Collections: TSV ``docno<TAB>text``, BEIR ``corpus.jsonl`` (``_id``, ``title``, ``text``) or Pyserini JSONL
(``id``, ``contents``). Runs: TREC 6 columns.

Every reader reads bytes, splits lines on ``\\n`` only (MS MARCO v2 passages hold bare ``\\r``), strips one
trailing ``\\r`` and a leading BOM, and reports a malformed line as ``FormatError(path, line, why)``.
Blank lines are skipped. Collections are streamed; topics, qrels and runs are small and read whole.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

from ranker.errors import FormatError, MissingInputError
from ranker.io.atomic import atomic_open
from ranker.types import Doc, Qrel, Query, Ranking, ScoredDoc, sort_docs

PathLike = str | Path


def iter_lines(path: PathLike) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file as ``(line number, text)``, without line ends."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise FormatError(path, lineno, f"not UTF-8 ({e.reason} at byte {e.start})") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            line = line.removesuffix("\n").removesuffix("\r")
            if line.strip():
                yield lineno, line


def _is_jsonl(path: PathLike) -> bool:
    return Path(path).suffix.lower() in {".jsonl", ".json"}


def _json_record(path: PathLike, lineno: int, line: str, keys: tuple[str, ...]) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise FormatError(path, lineno, f"invalid JSON ({e.msg})") from None
    if not isinstance(record, dict):
        raise FormatError(path, lineno, "expected a JSON object")
    missing = [k for k in keys if k not in record]
    if missing:
        raise FormatError(path, lineno, f"missing field(s) {', '.join(missing)}; found {', '.join(record)}")
    return record


def _id(path: PathLike, lineno: int, value: object, what: str) -> str:
    text = str(value).strip() if value is not None else ""
    if not text or any(c.isspace() for c in text):
        raise FormatError(path, lineno, f"{what} must be non-empty and contain no whitespace, got {value!r}")
    return text


def read_ids(path: PathLike, what: str = "docno") -> list[str]:
    """Ids, one a line: document ids (what ``rank index --delete`` and ``rank encode --delete`` read), or query ids
    with ``what="qid"`` (``rank run --qids``)."""
    ids: dict[str, int] = {}
    for lineno, line in iter_lines(path):
        docno = _id(path, lineno, line, f"a {what}")
        if docno in ids:
            raise FormatError(path, lineno, f"{what} {docno!r} repeated (first at line {ids[docno]})")
        ids[docno] = lineno
    return list(ids)


# ---------------------------------------------------------------- topics


def read_topics(path: PathLike) -> dict[str, Query]:
    """Queries by qid, in file order. ``.jsonl`` is BEIR (``_id``, ``text``), anything else TSV.

    A query whose text is empty (or only whitespace) is an error: no stage can rank for it.
    """
    topics: dict[str, Query] = {}
    for lineno, line in iter_lines(path):
        if _is_jsonl(path):
            record = _json_record(path, lineno, line, ("_id", "text"))
            qid = _id(path, lineno, record["_id"], "query id")
            if not isinstance(record["text"], str):  # null, a number, a list: no query text, not its repr
                raise FormatError(path, lineno, f"query {qid!r}: text must be a string, got {record['text']!r}")
            text = record["text"]
        else:
            if "\t" not in line:
                raise FormatError(path, lineno, "expected 'qid<TAB>query text', found no tab")
            qid, text = line.split("\t", 1)
            qid = _id(path, lineno, qid, "query id")
        if qid in topics:
            raise FormatError(path, lineno, f"duplicate query id {qid!r}")
        if not text.strip():
            raise FormatError(path, lineno, f"query {qid!r} has no text")
        topics[qid] = Query(qid, text.strip())
    return topics


def write_topics(topics: Iterable[Query], path: PathLike) -> None:
    """Write TSV topics atomically."""
    with atomic_open(path) as f:
        for q in topics:
            f.write(f"{q.qid}\t{' '.join(q.text.split())}\n")


# ---------------------------------------------------------------- qrels


def read_qrels(path: PathLike) -> list[Qrel]:
    """Judgements from TREC qrels (``qid iter docno rel``) or BEIR TSV (header ``query-id corpus-id score``)."""
    qrels: list[Qrel] = []
    seen: set[tuple[str, str]] = set()
    beir = False
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not qrels and not beir and fields[:2] == ["query-id", "corpus-id"]:
            beir = True
            continue
        want = 3 if beir else 4
        if len(fields) != want:
            layout = "'query-id<TAB>corpus-id<TAB>score'" if beir else "'qid iteration docno relevance'"
            raise FormatError(path, lineno, f"expected {want} columns {layout}, found {len(fields)}")
        qid, docno, rel = (fields[0], fields[1], fields[2]) if beir else (fields[0], fields[2], fields[3])
        try:
            relevance = int(rel)
        except ValueError:
            raise FormatError(path, lineno, f"relevance must be an integer, got {rel!r}") from None
        if (qid, docno) in seen:
            raise FormatError(path, lineno, f"duplicate judgement for query {qid!r}, document {docno!r}")
        seen.add((qid, docno))
        qrels.append(Qrel(qid, docno, relevance))
    return qrels


def write_qrels(qrels: Iterable[Qrel], path: PathLike) -> None:
    """Write TREC qrels atomically."""
    with atomic_open(path) as f:
        for q in qrels:
            f.write(f"{q.qid} 0 {q.docno} {q.relevance}\n")


# ---------------------------------------------------------------- collections


def iter_collection(path: PathLike) -> Iterator[Doc]:
    """Stream documents from TSV, BEIR ``corpus.jsonl`` or Pyserini JSONL (chosen per line by its keys).

    A document id seen before is an error naming its line (only the ids are kept for that check).
    """
    seen: set[str] = set()
    for lineno, doc in _parse_collection(path):
        if doc.docno in seen:
            raise FormatError(path, lineno, f"duplicate document id {doc.docno!r}")
        seen.add(doc.docno)
        yield doc


def _parse_collection(path: PathLike) -> Iterator[tuple[int, Doc]]:
    for lineno, line in iter_lines(path):
        if _is_jsonl(path):
            record = _json_record(path, lineno, line, ())
            if "_id" in record:  # BEIR
                record = _json_record(path, lineno, line, ("_id", "text"))
                docno = _id(path, lineno, record["_id"], "document id")
                yield lineno, Doc(docno, str(record["text"] or ""), str(record.get("title") or ""))
            elif "id" in record and "contents" in record:  # Pyserini
                yield lineno, Doc(_id(path, lineno, record["id"], "document id"), str(record["contents"] or ""))
            else:
                raise FormatError(path, lineno, "expected BEIR ('_id', 'title', 'text') or Pyserini ('id', 'contents')")
        else:
            if "\t" not in line:
                raise FormatError(path, lineno, "expected 'docno<TAB>text', found no tab")
            docno, text = line.split("\t", 1)
            yield lineno, Doc(_id(path, lineno, docno, "document id"), text)


def write_collection(docs: Iterable[Doc], path: PathLike) -> None:
    """Write a TSV collection (``docno<TAB>contents``, whitespace collapsed) atomically: what ``rank index``
    and ``rank encode --collection`` read."""
    with atomic_open(path) as f:
        for doc in docs:
            f.write(f"{doc.docno}\t{' '.join(doc.contents.split())}\n")


def read_collection(path: PathLike) -> dict[str, Doc]:
    """A whole (small) collection by docno; a repeated docno is an error."""
    return {doc.docno: doc for doc in iter_collection(path)}


# ---------------------------------------------------------------- runs


def read_run(path: PathLike, known_qids: Collection[str] | None = None) -> Ranking:
    """A TREC run (``qid Q0 docno rank score tag``), each query sorted best first.

    With ``known_qids``, a line naming any other query is an error (e.g. candidates vs topics).
    """
    run: Ranking = {}
    seen: set[tuple[str, str]] = set()
    for lineno, line in iter_lines(path):
        fields = line.split()
        if len(fields) != 6:
            raise FormatError(path, lineno, f"expected 6 columns 'qid Q0 docno rank score tag', found {len(fields)}")
        qid, _, docno, rank, score, _tag = fields
        try:
            int(rank)
            value = float(score)
        except ValueError:
            raise FormatError(path, lineno,
                              f"rank must be an integer and score a number, got {rank!r}, {score!r}") from None
        if not math.isfinite(value):
            raise FormatError(path, lineno, f"score must be finite, got {score!r}")
        if known_qids is not None and qid not in known_qids:
            raise FormatError(path, lineno, f"query {qid!r} is not in the topics")
        if (qid, docno) in seen:
            raise FormatError(path, lineno, f"document {docno!r} appears twice for query {qid!r}")
        seen.add((qid, docno))
        run.setdefault(qid, []).append(ScoredDoc(qid, docno, value))
    return {qid: sort_docs(docs) for qid, docs in run.items()}


def format_run(ranking: Ranking, tag: str) -> Iterator[str]:
    """TREC run lines, each query sorted by score (ties by docno, descending), ranks from 1."""
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"run tag must be non-empty without whitespace, got {tag!r}")
    for qid, docs in ranking.items():
        for rank, d in enumerate(sort_docs(docs), start=1):
            yield f"{qid} Q0 {d.docno} {rank} {float(d.score)!r} {tag}\n"


def write_run(ranking: Ranking, path: PathLike, tag: str) -> None:
    """Write a TREC run atomically; scores keep full precision so a re-read gives the same ranking."""
    lines = format_run(ranking, tag)
    with atomic_open(path) as f:
        f.writelines(lines)
