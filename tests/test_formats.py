from __future__ import annotations

import pytest

from ranker.errors import FormatError, MissingInputError
from ranker.io import formats
from ranker.types import Doc, Qrel, Query, ScoredDoc

from .conftest import FIXTURES


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def test_topics_tsv_and_beir_jsonl(tmp_path):
    assert formats.read_topics(FIXTURES / "topics.tsv")["q2"] == Query("q2", "lucene inverted index")
    beir = write(tmp_path, "queries.jsonl", '{"_id": "7", "text": "a claim", "metadata": {}}\n')
    assert formats.read_topics(beir) == {"7": Query("7", "a claim")}


def test_topics_bom_crlf_and_blank_lines(tmp_path):
    path = write(tmp_path, "t.tsv", b"\xef\xbb\xbf1\tfirst\r\n\r\n2\tsecond\r\n")
    assert formats.read_topics(path) == {"1": Query("1", "first"), "2": Query("2", "second")}


@pytest.mark.parametrize("content, line, message", [
    ("1\tok\n2 no tab here\n", 2, "no tab"),
    ("1\tok\n1\tagain\n", 2, "duplicate query id"),
    ("\tempty id\n", 1, "query id"),
    ("1\tok\n2\t  \n", 2, "query '2' has no text"),
])
def test_topics_malformed(tmp_path, content, line, message):
    path = write(tmp_path, "t.tsv", content)
    with pytest.raises(FormatError, match=message) as e:
        formats.read_topics(path)
    assert (e.value.path, e.value.line) == (str(path), line)
    assert str(e.value).startswith(f"{path}:{line}: ")


def test_not_utf8_names_the_line(tmp_path):
    path = write(tmp_path, "t.tsv", b"1\tok\n2\tbad \xff byte\n")
    with pytest.raises(FormatError, match="not UTF-8") as e:
        formats.read_topics(path)
    assert e.value.line == 2


def test_missing_file(tmp_path):
    with pytest.raises(MissingInputError, match="no such file"):
        formats.read_topics(tmp_path / "absent.tsv")


def test_qrels_trec_and_beir(tmp_path):
    assert formats.read_qrels(FIXTURES / "qrels.txt")[0] == Qrel("q1", "d1", 2)
    beir = write(tmp_path, "test.tsv", "query-id\tcorpus-id\tscore\n1\t31715818\t1\n")
    assert formats.read_qrels(beir) == [Qrel("1", "31715818", 1)]


@pytest.mark.parametrize("content, line, message", [
    ("q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 columns"),
    ("q1 0 d1 high\n", 1, "relevance must be an integer"),
    ("q1 0 d1 1\nq1 0 d1 0\n", 2, "duplicate judgement"),
])
def test_qrels_malformed(tmp_path, content, line, message):
    path = write(tmp_path, "q.txt", content)
    with pytest.raises(FormatError, match=message) as e:
        formats.read_qrels(path)
    assert e.value.line == line


def test_beir_qrels_with_wrong_columns(tmp_path):
    path = write(tmp_path, "test.tsv", "query-id\tcorpus-id\tscore\n1\t2\t1\t9\n")
    with pytest.raises(FormatError, match="expected 3 columns") as e:
        formats.read_qrels(path)
    assert e.value.line == 2


def test_collections_tsv_beir_pyserini(tmp_path):
    tsv = write(tmp_path, "c.tsv", "10\tplain text\n11\ttext with a bare \r carriage return\n")
    assert list(formats.iter_collection(tsv)) == [Doc("10", "plain text"),
                                                  Doc("11", "text with a bare \r carriage return")]
    beir = formats.read_collection(FIXTURES / "docs.jsonl")
    assert beir["d1"].contents.startswith("Reranking Neural reranking")
    assert beir["d3"].contents == beir["d3"].text  # no title: no leading space
    pyserini = write(tmp_path, "c.jsonl", '{"id": "x", "contents": "hello"}\n')
    assert list(formats.iter_collection(pyserini)) == [Doc("x", "hello")]


@pytest.mark.parametrize("name, content, message", [
    ("c.tsv", "1\tok\nno-tab\n", "no tab"),
    ("c.jsonl", '{"id": "1", "contents": "a"}\n{"id": "2"\n', "invalid JSON"),
    ("c.jsonl", '{"id": "1", "contents": "a"}\n{"docid": "2", "body": "b"}\n', "expected BEIR"),
])
def test_collection_malformed(tmp_path, name, content, message):
    with pytest.raises(FormatError, match=message) as e:
        list(formats.iter_collection(write(tmp_path, name, content)))
    assert e.value.line == 2


def test_duplicate_docno_in_a_streamed_collection_names_its_line(tmp_path):
    """Streaming (index, encode) rejects a repeated id too, not only reading a whole collection."""
    path = write(tmp_path, "c.tsv", "1\ta\n2\tb\n\n1\tc\n")
    docs = formats.iter_collection(path)
    assert [next(docs).docno, next(docs).docno] == ["1", "2"]
    with pytest.raises(FormatError, match="duplicate document id '1'") as e:
        next(docs)
    assert e.value.line == 4
    with pytest.raises(FormatError, match="duplicate document id '1'"):
        formats.read_collection(path)


def test_a_written_collection_reads_back_with_its_whitespace_collapsed(tmp_path):
    path = tmp_path / "passages.tsv"
    formats.write_collection([Doc("7", "a\tpassage\nover lines"), Doc("8", "text", title="Title")], path)
    assert formats.read_collection(path) == {"7": Doc("7", "a passage over lines"), "8": Doc("8", "Title text")}


def test_run_round_trip_sorts_and_breaks_ties_like_trec_eval(tmp_path):
    ranking = {"q1": [ScoredDoc("q1", "a", 1.0), ScoredDoc("q1", "c", 2.0), ScoredDoc("q1", "b", 2.0)],
               "q2": [ScoredDoc("q2", "z", 0.1 + 0.2)]}
    path = tmp_path / "run.trec"
    formats.write_run(ranking, path, "test")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 c 1 2.0 test"  # tie on 2.0: docno descending, as trec_eval orders
    assert lines[1] == "q1 Q0 b 2 2.0 test"
    back = formats.read_run(path)
    assert [d.docno for d in back["q1"]] == ["c", "b", "a"]
    assert back["q2"][0].score == 0.1 + 0.2  # full precision survives


@pytest.mark.parametrize("content, message", [
    ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2 0.5\n", "expected 6 columns"),
    ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 x 0.5 t\n", "rank must be an integer"),
    ("q1 Q0 d1 1 1.0 t\nq1 Q0 d2 2 nan t\n", "score must be finite"),
    ("q1 Q0 d1 1 1.0 t\nq1 Q0 d1 2 0.5 t\n", "appears twice"),
])
def test_run_malformed(tmp_path, content, message):
    with pytest.raises(FormatError, match=message) as e:
        formats.read_run(write(tmp_path, "r.trec", content))
    assert e.value.line == 2


def test_run_query_absent_from_topics(tmp_path):
    path = write(tmp_path, "r.trec", "q1 Q0 d1 1 1.0 t\nq9 Q0 d1 1 1.0 t\n")
    with pytest.raises(FormatError, match="query 'q9' is not in the topics") as e:
        formats.read_run(path, known_qids={"q1"})
    assert e.value.line == 2


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "run.trec"
    with pytest.raises(ValueError):
        formats.write_run({"q": [ScoredDoc("q", "d", 1.0)]}, path, "bad tag")
    assert list(tmp_path.iterdir()) == []
