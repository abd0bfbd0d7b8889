"""Property-based tests of every reader and writer: any bytes either parse exactly or fail with one
FormatError naming the file and a line that exists; written files read back unchanged."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ranker.errors import FormatError
from ranker.io import formats
from ranker.types import Qrel, Query, ScoredDoc, sort_docs

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

ids = st.text(string.ascii_letters + string.digits + "-_.:", min_size=1, max_size=12)
texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# a line of anything: separators, quotes, braces, digits, unicode, stray \r
noise = st.text(st.sampled_from(list("\t \r{}[]\":,0123456789.-eE+abcQ0\u00e9\u2028\ufeff")), max_size=30)
garbled = st.lists(st.one_of(noise, st.binary(max_size=30).map(lambda b: b.decode("latin-1"))), max_size=8)

READERS = {
    "topics.tsv": formats.read_topics,
    "queries.jsonl": formats.read_topics,
    "qrels.txt": formats.read_qrels,
    "corpus.tsv": formats.read_collection,
    "corpus.jsonl": formats.read_collection,
    "run.trec": formats.read_run,
}


def _write_bytes(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", sorted(READERS))
@SETTINGS
@given(data=st.binary(max_size=300) | garbled.map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")))
def test_any_bytes_parse_or_name_the_file_and_line(tmp_path, name, data):
    path = _write_bytes(tmp_path, name, data)
    try:
        READERS[name](path)
    except FormatError as e:
        assert e.path == str(path)
        lines = data.split(b"\n")
        assert e.line is not None and 1 <= e.line <= len(lines)
        assert "\n" not in str(e) and str(e).startswith(f"{path}:{e.line}: ")


@SETTINGS
@given(st.dictionaries(ids, st.lists(st.tuples(ids, st.floats(allow_nan=False, allow_infinity=False)), max_size=6,
                                     unique_by=lambda t: t[0]), max_size=5))
def test_a_written_run_reads_back_unchanged(tmp_path, raw):
    ranking = {qid: [ScoredDoc(qid, d, s) for d, s in docs] for qid, docs in raw.items() if docs}
    path = tmp_path / "run.trec"
    formats.write_run(ranking, path, "tag")
    back = formats.read_run(path)
    assert back == {qid: sort_docs(docs) for qid, docs in ranking.items()}
    formats.write_run(back, tmp_path / "again.trec", "tag")
    assert (tmp_path / "again.trec").read_bytes() == path.read_bytes()  # byte-identical on a second write


@SETTINGS
@given(st.lists(st.tuples(ids, texts), max_size=6, unique_by=lambda t: t[0]))
def test_written_topics_read_back_with_whitespace_collapsed(tmp_path, raw):
    assume(all(" ".join(text.split()) for _, text in raw))  # an empty query is rejected (see below)
    formats.write_topics([Query(q, t) for q, t in raw], tmp_path / "t.tsv")
    assert formats.read_topics(tmp_path / "t.tsv") == {q: Query(q, " ".join(t.split())) for q, t in raw}


@SETTINGS
@given(st.lists(st.tuples(ids, ids, st.integers(-1, 4)), max_size=8, unique_by=lambda t: (t[0], t[1])))
def test_written_qrels_read_back_unchanged(tmp_path, raw):
    qrels = [Qrel(q, d, r) for q, d, r in raw]
    formats.write_qrels(qrels, tmp_path / "q.txt")
    assert formats.read_qrels(tmp_path / "q.txt") == qrels


@SETTINGS
@given(st.lists(st.tuples(ids, texts, texts), max_size=6, unique_by=lambda t: t[0]),
       st.sampled_from(["beir", "pyserini", "tsv"]))
def test_valid_collection_lines_parse_exactly(tmp_path, raw, layout):
    if layout == "tsv":
        raw = [(d, "", " ".join(text.replace("\t", " ").split())) for d, _, text in raw]
        lines = [f"{d}\t{text}" for d, _, text in raw]
        expected = [(d, text, "") for d, _, text in raw]
    elif layout == "beir":
        lines = [json.dumps({"_id": d, "title": title, "text": text}) for d, title, text in raw]
        expected = [(d, text, title) for d, title, text in raw]
    else:
        lines = [json.dumps({"id": d, "contents": text}) for d, _, text in raw]
        expected = [(d, text, "") for d, _, text in raw]
    path = _write_bytes(tmp_path, "c.tsv" if layout == "tsv" else "c.jsonl", "\n".join(lines).encode())
    got = [(doc.docno, doc.text, doc.title) for doc in formats.iter_collection(path)]
    assert got == expected


@SETTINGS
@given(st.lists(st.tuples(ids, ids, st.integers(1, 1000), st.floats(allow_nan=False, allow_infinity=False)),
                min_size=1, max_size=8, unique_by=lambda t: (t[0], t[1])),
       st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_valid_run_lines_parse_exactly_with_crlf_and_bom(tmp_path, raw, newline, bom):
    lines = [f"{q} Q0 {d} {r} {s!r} tag" for q, d, r, s in raw]
    data = ("\ufeff" if bom else "") + newline.join(lines) + newline
    path = _write_bytes(tmp_path, "r.trec", data.encode())
    run = formats.read_run(path)
    assert sorted((d.qid, d.docno, d.score) for docs in run.values() for d in docs) == \
        sorted((q, d, s) for q, d, _, s in raw)
    assert all(math.isfinite(d.score) for docs in run.values() for d in docs)
