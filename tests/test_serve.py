"""``rank serve`` against real servers on loopback ports: rankings equal ``rank run``, every bad input is a 4xx
with a JSON error naming the field (and the next good request still succeeds), batching, back-pressure,
timeouts, metrics, and the exact bodies Elasticsearch and OpenSearch send."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ranker.serve.app import create_app
from ranker.serve.config import ServeConfig
from ranker.serve.limits import server_options
from ranker.serve.loadtest import free_port
from ranker.serve.service import Passages, RerankService

from .conftest import ROOT, rank

QUERIES = ("1037798", "104861")  # two DL19 queries: their BM25 top-100 make the test store


class Client:
    """JSON over a fresh loopback connection per call; ``server``: the uvicorn server, when started here."""

    def __init__(self, port: int, server=None):
        self.port, self.server = port, server

    def call(self, method: str, path: str, body: object = None, raw: bytes | None = None) -> tuple[int, object, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        connection.request(method, path, data, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        headers = dict(response.getheaders())
        connection.close()
        kind = headers.get("content-type", "")
        return response.status, json.loads(payload) if "json" in kind else payload.decode(), headers


@contextlib.contextmanager
def running(config: ServeConfig, service=None) -> Iterator[Client]:
    """A real uvicorn server in a thread on a free loopback port; stopped on exit."""
    import uvicorn

    port = free_port()
    app = create_app(config, service)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           **server_options(config, app)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the server did not start")
        time.sleep(0.05)
    try:
        yield Client(port, server)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def dl19(data, tmp_path_factory) -> dict:
    """Two DL19 queries, their BM25 top-100, and the shipped student's store of those passages."""
    from ranker.io.formats import read_run, read_topics, write_run
    from ranker.io.texts import texts_for
    from ranker.models.twinbert import TwinBert
    from ranker.store.build import build_store

    ms = data / "msmarco-passage"
    root = tmp_path_factory.mktemp("serve")
    run = {q: docs for q, docs in read_run(ms / "runs" / "bm25.dl19.top100.trec").items() if q in QUERIES}
    write_run(run, root / "candidates.trec", "bm25")
    texts = texts_for([ms / "passages" / "dl19.tsv"], {d.docno for docs in run.values() for d in docs})
    model = TwinBert.load(ROOT / "models" / "twinbert", device="cpu")
    build_store(model, [(d, texts[d]) for d in sorted(texts)], root / "store", progress=False)
    topics = read_topics(ms / "topics" / "dl19.tsv")
    return {"root": root, "run": run, "texts": texts, "queries": {q: topics[q].text for q in QUERIES},
            "topics": ms / "topics" / "dl19.tsv", "collection": ms / "passages" / "dl19.tsv"}


@pytest.fixture(scope="module")
def service(dl19) -> RerankService:
    return RerankService(ServeConfig(store=str(dl19["root"] / "store"), model=str(ROOT / "models" / "twinbert"),
                                     threads=2))


@pytest.fixture(scope="module")
def server(dl19, service) -> Iterator[Client]:
    config = ServeConfig(store=str(dl19["root"] / "store"), max_documents=150, max_text_chars=5000,
                         max_query_chars=300, encode_batch=8)
    with running(config, service) as client:
        yield client


def test_rankings_equal_rank_run(dl19, server, tmp_path):
    """/v1/rerank by id and by text, and /rerank (TEI), order the candidates as rank run --reranker twinbert
    --fusion none (the rerank routes score the texts they are sent; the search engine calling them has its own
    lexical score to fuse)."""
    out = tmp_path / "twinbert.trec"
    rank("run", "--topics", dl19["topics"], "--candidates", dl19["root"] / "candidates.trec", "--reranker",
         "twinbert", "--model", ROOT / "models" / "twinbert", "--store", dl19["root"] / "store", "--fusion", "none",
         "--output", out)
    from ranker.io.formats import read_run

    expected = read_run(out)
    for qid, docs in dl19["run"].items():
        docnos = [d.docno for d in docs]
        want = [d.docno for d in expected[qid]]
        scores = {d.docno: d.score for d in expected[qid]}
        status, body, _ = server.call("POST", "/v1/rerank", {"query": dl19["queries"][qid], "raw_scores": True,
                                                             "documents": [{"id": d} for d in docnos]})
        assert status == 200 and body["meta"]["ranker"]["by_id"] == 100
        got = [docnos[r["index"]] for r in body["results"]]
        assert got == want
        assert [r["relevance_score"] for r in body["results"]] == pytest.approx([scores[d] for d in got], abs=1e-4)
        status, body, _ = server.call("POST", "/v1/rerank", {"query": dl19["queries"][qid], "top_n": 10,
                                                             "documents": [dl19["texts"][d] for d in docnos]})
        assert status == 200 and body["meta"]["ranker"] == {"by_id": 0, "by_hash": 100, "encoded": 0,
                                                            "score": "sigmoid(logit)", "passage_tokens": 128}
        assert [docnos[r["index"]] for r in body["results"]] == want[:10]
        assert all(0 < r["relevance_score"] < 1 for r in body["results"])
        status, tei, _ = server.call("POST", "/rerank", {"query": dl19["queries"][qid],
                                                         "texts": [dl19["texts"][d] for d in docnos]})
        assert status == 200 and [docnos[r["index"]] for r in tei] == want


def test_ties_follow_the_one_rule_of_rank_run(dl19, server):
    """Equal scores: documents with a docno by docno descending (as rank run writes them, whatever order they
    were sent in), bare texts after them in the order sent. Two stored passages sent by id and again as their
    texts (found by hash: the same vectors) make four documents in two tied pairs."""
    qid = next(iter(dl19["run"]))
    low, high = sorted(d.docno for d in dl19["run"][qid][:2])
    documents = [dl19["texts"][high], {"id": low}, dl19["texts"][low], {"id": high}]
    status, body, _ = server.call("POST", "/v1/rerank", {"query": dl19["queries"][qid], "raw_scores": True,
                                                         "documents": documents})
    assert status == 200 and body["meta"]["ranker"]["by_hash"] == 2
    scores = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert scores[0] == scores[3] and scores[1] == scores[2]
    pairs = [[3, 0], [1, 2]] if scores[3] > scores[1] else [[1, 2], [3, 0]]
    assert [r["index"] for r in body["results"]] == [i for pair in pairs for i in pair]


def test_unseen_texts_are_encoded_in_several_passes_and_counted(server):
    texts = [f"passage number {i} about nothing in particular" for i in range(20)]  # encode_batch is 8
    status, body, _ = server.call("POST", "/v1/rerank", {"query": "what is a passage", "documents": texts,
                                                         "return_documents": True})
    assert status == 200 and body["meta"]["ranker"]["encoded"] == 20 and len(body["results"]) == 20
    assert body["results"][0]["document"]["text"] in texts
    status, metrics, _ = server.call("GET", "/metrics")
    assert 'ranker_documents_total{source="encoded"}' in metrics


def test_health_and_metrics(server, service):
    status, body, _ = server.call("GET", "/health")
    assert status == 200 and body["fingerprint"] == service.student.fingerprint and body["store"]["passages"] == 200
    status, text, _ = server.call("GET", "/metrics")
    assert status == 200 and "ranker_requests_total" in text and "ranker_query_batch_size_bucket" in text


def test_a_query_longer_than_the_cap_is_counted(server):
    def cut() -> float:
        _, text, _ = server.call("GET", "/metrics")
        return float(re.search(r"^ranker_queries_truncated_total (\S+)$", text, re.M).group(1))

    _, health, _ = server.call("GET", "/health")
    before, words = cut(), " ".join(["river"] * health["query_max_length"])
    for query in ("a short query", words):
        assert server.call("POST", "/v1/rerank", {"query": query, "documents": ["a passage"]})[0] == 200
    assert cut() == before + 1


def test_metrics_are_labelled_by_route_so_unknown_paths_share_one_label(server):
    for n in range(30):
        server.call("GET", f"/no-such-path-{n}")
    server.call("GET", "/health")
    _, text, _ = server.call("GET", "/metrics")
    assert "no-such-path" not in text
    assert 'endpoint="unmatched"' in text and 'endpoint="/health"' in text


def test_every_route_and_status_answers_the_one_error_shape_and_head_works(server):
    for method, path, status, field in [("GET", "/no-such-path", 404, "path"), ("GET", "/v1/rerank", 405, "method"),
                                        ("DELETE", "/health", 405, "method"), ("GET", "/search?q=x&k=many", 422, "k")]:
        got, body, _ = server.call(method, path)
        assert got == status and set(body) == {"error"} and body["error"]["field"] == field, (path, body)
    for path in ("/", "/health"):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("HEAD", path)
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b""
        connection.close()


GOOD = {"query": "what is durable medical equipment", "documents": ["a wheelchair is durable equipment"]}


@pytest.mark.parametrize("path, body, status, field", [
    ("/v1/rerank", b'{"query": "x", "documents": [', 400, "body"),
    ("/v1/rerank", b'{"query": "\xff\xfe", "documents": ["a"]}', 400, "body"),
    ("/v1/rerank", {"documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": "   ", "documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": "x" * 301, "documents": ["a"]}, 413, "query"),
    ("/v1/rerank", {"query": "x", "documents": []}, 422, "documents"),
    ("/v1/rerank", {"query": "x"}, 422, "documents"),
    ("/v1/rerank", {"query": "x", "documents": [3]}, 422, "documents[0]"),
    ("/v1/rerank", {"query": "x", "documents": ["a", {"title": "no text, no id"}]}, 422, "documents[1]"),
    ("/v1/rerank", {"query": "x", "documents": ["a", "y" * 5001]}, 413, "documents[1]"),
    ("/v1/rerank", {"query": "x", "documents": ["a"] * 151}, 413, "documents"),
    ("/v1/rerank", {"query": "x", "documents": [{"text": "a"}, {"id": "no-such-passage"}]}, 404,
     "documents[1].id"),
    ("/v1/rerank", {"query": "x", "documents": ["a"], "top_n": 0}, 422, "top_n"),
    ("/v1/rerank", {"query": "x", "documents": ["a"], "top_n": "many"}, 422, "top_n"),
    ("/v1/rerank", ["not", "an", "object"], 422, "body"),
    ("/v1/rerank", b'{"query": "\\ud800", "documents": ["a"]}', 422, "query"),
    ("/v1/rerank", b'{"query": "x", "documents": ["a", {"text": "b\\udfff"}]}', 422, "documents[1].text"),
    ("/rerank", b'{"query": "x", "texts": ["a", "\\ud83d"]}', 422, "texts[1]"),
    ("/rerank", {"query": "x"}, 422, "texts"),
    ("/rerank", {"query": "x", "texts": [None]}, 422, "texts[0]"),
    ("/search?q=anything", None, 409, "index"),
    ("/v1/rerank", b"[" * 3_000 + b"]" * 3_000, 400, "body"),  # few values (under 3,100), too deep to parse
    ("/v1/rerank", b"[" * 100_000 + b"]" * 100_000, 413, "body"),  # counted before parsing
    ("/v1/rerank", b'{"query": "x", "documents": ["a"], "x": {%s}}' % b",".join(b'"k%d": 0' % i for i in range(4000)),
     413, "body"),
    ("/v1/rerank", {"query": "\u0000\ufeff\u0301", "documents": ["a"]}, 422, "query"),
    ("/v2/rerank", {"query": "x", "documents": [{"text": "a"}]}, 422, "documents[0]"),
    ("/v2/rerank", {"query": "x", "documents": ["a"], "top_n": 0}, 422, "top_n"),
])
def test_bad_input_is_a_json_error_naming_the_field(server, path, body, status, field):
    raw = body if isinstance(body, bytes) else None
    got, payload, _ = server.call("GET" if path.startswith("/search") else "POST", path,
                                  None if raw else body, raw)
    assert got == status, payload
    assert payload["error"]["field"] == field and payload["error"]["status"] == status and payload["error"]["reason"]
    ok, answer, _ = server.call("POST", "/v1/rerank", GOOD)  # the server is none the worse
    assert ok == 200 and answer["results"][0]["index"] == 0


def test_a_server_fault_is_one_json_error_and_one_log_line_with_the_request_id(server, service, monkeypatch,
                                                                              caplog):
    def broken(*args):
        raise RuntimeError("a bug\nwith a second line")

    monkeypatch.setattr(service, "cross", broken)
    with caplog.at_level("DEBUG", logger="ranker.serve"):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("POST", "/v1/rerank", json.dumps(GOOD), {"X-Request-Id": "trace-42"})
        response = connection.getresponse()
        body = json.loads(response.read())
        connection.close()
    assert response.status == 500 and response.getheader("X-Request-Id") == "trace-42"
    assert body["error"]["status"] == 500 and body["error"]["request_id"] == "trace-42"
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "trace-42" in errors[0].getMessage() and "a bug" in errors[0].getMessage()
    assert "\n" not in errors[0].getMessage() and errors[0].exc_info is None  # the traceback is at debug level
    monkeypatch.undo()
    status, _, headers = server.call("POST", "/v1/rerank", GOOD)
    assert status == 200 and len(headers["x-request-id"]) == 32  # a fresh id where the client sent none
    _, text, _ = server.call("GET", "/metrics")
    assert 'endpoint="/v1/rerank",status="500"' in text


def test_unseen_texts_are_encoded_in_turns_within_a_budget_and_the_timeout(dl19, service, monkeypatch):
    """Over --max-encode unseen texts is a 413; a request encoding many shares the model thread (a small request
    sent after it is answered first); past --timeout its encoding stops with a 504."""
    texts = [f"{t} (edited)" for t in dl19["texts"].values()][:96]  # none of them in the store
    query = {"query": dl19["queries"][QUERIES[0]]}
    stored = {**query, "documents": [{"id": d} for d in list(dl19["texts"])[:20]]}
    config = ServeConfig(store=str(dl19["root"] / "store"), encode_batch=8, max_encode=96, timeout_s=60)
    with running(config, service) as client:
        status, error, _ = client.call("POST", "/v1/rerank", {**query, "documents": texts + ["one more"]})
        assert status == 413 and "more than the 96 a request may encode" in error["error"]["reason"]
        done: dict[str, float] = {}

        def send(name: str, body: dict) -> None:
            assert client.call("POST", "/v1/rerank", body)[0] == 200
            done[name] = time.monotonic()

        big = threading.Thread(target=send, args=("big", {**query, "documents": texts}))
        big.start()
        time.sleep(0.3)  # the big request is encoding now
        send("small", stored)
        big.join()
        assert done["small"] < done["big"]
    batches = []
    monkeypatch.setattr(service, "encode_passages", lambda texts, run=service.encode_passages: (
        batches.append(len(texts)), run(texts))[1])
    with running(dataclasses.replace(config, timeout_s=0.3), service) as client:
        status, error, _ = client.call("POST", "/v1/rerank", {**query, "documents": texts})
        assert status == 504 and error["error"]["field"] == "documents"
        time.sleep(2)  # the batch under way when time ran out finishes; no other is started
        assert 1 <= len(batches) < len(texts) // 8
        assert client.call("POST", "/v1/rerank", stored)[0] == 200


def test_bodies_are_limited_while_they_are_read(dl19, service):
    """A declared Content-Length over the limit is refused before the body is sent; a chunked body is refused
    once it grows past the limit; a body that stalls gets 408; the next request is served."""
    import socket

    def exchange(port: int, head: bytes, parts: list[bytes], pause: float = 0.0) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)
            for part in parts:
                time.sleep(pause)
                with contextlib.suppress(OSError):
                    sock.sendall(part)
            answer = b""
            while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < int(
                    answer.lower().partition(b"content-length: ")[2].split(b"\r\n")[0] or 0):
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
            return answer

    config = ServeConfig(store=str(dl19["root"] / "store"), max_body_bytes=2000, read_timeout_s=0.5)
    with running(config, service) as client:
        started = time.monotonic()
        answer = exchange(client.port, b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                       b"Content-Length: 5000000\r\n\r\n", [])
        assert answer.startswith(b"HTTP/1.1 413") and b'"field": "body"' in answer.replace(b'":"', b'": "')
        assert time.monotonic() - started < 5  # answered without waiting for 5 MB
        chunk = b"x" * 1500
        answer = exchange(client.port, b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
                          [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 3 + [b"0\r\n\r\n"])
        assert answer.startswith(b"HTTP/1.1 413")
        answer = exchange(client.port, b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
                          [b'{"query": "x"'], pause=0.1)
        assert answer.startswith(b"HTTP/1.1 408")
        status, _, _ = client.call("POST", "/v1/rerank", GOOD)
        assert status == 200


def test_a_store_from_another_model_refuses_to_start(dl19, tmp_path):
    from ranker.models.config import TwinBertConfig
    from ranker.models.twinbert import TwinBert

    other = TwinBert(TwinBertConfig(num_layers=1), device="cpu").save(tmp_path / "other")
    result = rank("serve", "--store", dl19["root"] / "store", "--model", other, "--port", free_port(), check=False)
    assert result.returncode == 2 and "rank: error:" in result.stderr and "fingerprint" in result.stderr


@pytest.mark.slow
def test_sigterm_drains_and_exits_0_and_a_busy_port_fails_before_the_model_loads(dl19):
    import socket
    import subprocess

    from ranker.serve.loadtest import ServerProcess

    store = str(dl19["root"] / "store")
    v1 = str(ROOT / "models" / "twinbert")  # the fixture's store is student v1's
    with ServerProcess("--store", store, "--model", v1) as running_server:
        port = running_server.port
        busy = rank("serve", "--store", store, "--host", "127.0.0.1", "--port", port, check=False)
        assert busy.returncode == 2 and f"rank: error: cannot listen on 127.0.0.1:{port}" in busy.stderr
        assert "serving" not in busy.stderr  # refused before loading the model
        running_server.process.terminate()
        try:
            code = running_server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            running_server.process.kill()
            raise
        assert code == 0 and "rank serve: stopped" in running_server.process.stderr.read()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = rank("serve", "--store", store, "--host", "127.0.0.1", "--port", taken.getsockname()[1], check=False)
        assert busy.returncode == 2 and "cannot listen on" in busy.stderr


class SlowService:
    """A stand-in model: each query-tower pass takes ``seconds`` and is recorded (batching, back-pressure)."""

    def __init__(self, seconds: float):
        self.seconds, self.batches, self.retriever = seconds, [], None
        self.store = {}

    def encode_queries(self, texts):
        self.batches.append(len(texts))
        time.sleep(self.seconds)
        return np.ones((len(texts), 4), dtype=np.float32), 0

    def snapshot(self):
        return self.store

    def reads_tokens(self, text):
        return True

    reloads = {}

    def locate(self, store, ids, texts, strict=True):
        return list(range(len(ids))), list(ids)

    passage_tokens = 128

    def passages(self, store, ids, rows, encoded=None, ms=0.0):
        return Passages(np.ones((len(ids), 4), dtype=np.float32), by_hash=len(ids))

    def cross(self, query, passages):
        return passages @ query

    def health(self):
        return {"status": "ok"}


def concurrently(client: Client, n: int, body: dict) -> list[tuple[int, object, dict]]:
    results: list = [None] * n

    def call(i: int) -> None:
        results[i] = client.call("POST", "/v1/rerank", body)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_queries_arriving_together_share_one_forward_pass():
    fake = SlowService(0.2)
    with running(ServeConfig(store="-", max_wait_ms=100, max_batch=16), fake) as client:
        results = concurrently(client, 8, GOOD)
    assert all(status == 200 for status, _, _ in results)
    assert max(fake.batches) > 1 and sum(fake.batches) == 8


def test_a_full_queue_is_503_with_retry_after_and_a_slow_answer_504():
    with running(ServeConfig(store="-", max_queue=1, max_batch=1, max_wait_ms=0), SlowService(0.5)) as client:
        results = concurrently(client, 6, GOOD)
        refused = [(body, headers) for status, body, headers in results if status == 503]
        assert refused and all(body["error"]["field"] == "query" and headers.get("retry-after") == "1"
                               for body, headers in refused)
        assert any(status == 200 for status, _, _ in results)
    with running(ServeConfig(store="-", timeout_s=0.05), SlowService(0.5)) as client:
        status, body, _ = client.call("POST", "/v1/rerank", GOOD)
        assert status == 504 and body["error"]["field"] == "query"


ES_REQUEST = '{"query": ${query}, "documents": ${input}, "top_n": ${top_n}, "return_documents": false}'
OS_REQUEST = '{ "documents": ${parameters.documents}, "query": "${parameters.query}", "top_n": ${parameters.top_n} }'


def jsonpath(document: object, path: str) -> list:
    """The ``$.a[*].b`` subset of JSONPath that Elasticsearch's json_parser settings use here."""
    head, _, field = path.removeprefix("$.").partition("[*].")
    return [item[field] for item in document[head]]


def test_v2_rank_fields_and_max_tokens_per_doc_are_honoured(dl19, server, service):
    """/v2/rerank ranks as /v1/rerank does; rank_fields picks the field ranked (a missing one is a 422 naming it);
    max_tokens_per_doc cuts passages (the cut ones are no longer the stored texts, so they are encoded)."""
    qid, docs = next(iter(dl19["run"].items()))
    docnos = [d.docno for d in docs]
    texts = [dl19["texts"][d] for d in docnos]
    query = dl19["queries"][qid]
    _, v1, _ = server.call("POST", "/v1/rerank", {"query": query, "documents": texts})
    status, v2, _ = server.call("POST", "/v2/rerank", {"query": query, "documents": texts, "top_n": 5,
                                                       "model": "rerank-v3.5"})
    assert status == 200 and v2["results"] == v1["results"][:5] and "document" not in v2["results"][0]
    swapped = [{"title": t, "text": "bread needs flour"} for t in texts]
    status, by_title, _ = server.call("POST", "/v1/rerank", {"query": query, "documents": swapped,
                                                             "rank_fields": ["title"]})
    assert status == 200 and by_title["results"] == v1["results"] and by_title["meta"]["ranker"]["by_hash"] == 100
    _, by_text, _ = server.call("POST", "/v1/rerank", {"query": query, "documents": swapped})
    assert len({r["relevance_score"] for r in by_text["results"]}) == 1  # every text the same: one score
    status, error, _ = server.call("POST", "/v1/rerank", {"query": query, "documents": swapped,
                                                          "rank_fields": ["title", "body"]})
    assert status == 422 and error["error"]["field"] == "documents[0].body"
    status, cut, _ = server.call("POST", "/v2/rerank", {"query": query, "documents": texts, "max_tokens_per_doc": 8})
    longer = sum(a != b for a, b in zip(service.cut(texts, 8), texts))
    assert status == 200 and cut["meta"]["ranker"]["passage_tokens"] == 8 and longer > 50
    assert cut["meta"]["ranker"]["encoded"] == longer and cut["meta"]["ranker"]["by_hash"] == 100 - longer
    assert [r["index"] for r in cut["results"]] != [r["index"] for r in v1["results"]]
    status, error, _ = server.call("POST", "/v2/rerank", {"query": query, "documents": texts,
                                                          "max_tokens_per_doc": 0})
    assert status == 422 and error["error"]["field"] == "max_tokens_per_doc"
    assert server.call("POST", "/v2/rerank", {"query": query, "documents": texts[:3]})[0] == 200


def test_the_elasticsearch_custom_service_request_parses_as_elasticsearch_reads_it(server):
    """docs/serving.md's `custom` inference service: ES fills the template with JSON values, reads two JSONPaths."""
    readme = (ROOT / "docs" / "serving.md").read_text()
    assert ES_REQUEST.replace('"', '\\"') in readme and "$.results[*].relevance_score" in readme
    docs = ["A wheelchair is durable medical equipment.", "Bread needs flour.", "Crutches are durable equipment."]
    body = (ES_REQUEST.replace("${query}", json.dumps("what is durable medical equipment"))
            .replace("${input}", json.dumps(docs)).replace("${top_n}", "3"))
    status, answer, _ = server.call("POST", "/v1/rerank", raw=body.encode())
    assert status == 200
    index, score = jsonpath(answer, "$.results[*].index"), jsonpath(answer, "$.results[*].relevance_score")
    assert sorted(index) == [0, 1, 2] and index[-1] == 1 and score == sorted(score, reverse=True)


def test_the_opensearch_connector_request_parses_as_the_cohere_post_process_reads_it(server):
    """docs/serving.md's ml-commons connector: the Cohere pre-process gives documents and query; the post-process
    reads results[].index and relevance_score and puts the scores back in document order."""
    readme = (ROOT / "docs" / "serving.md").read_text()
    assert OS_REQUEST.replace('"', '\\"') in readme and "connector.post_process.cohere.rerank" in readme
    docs = ["Bread needs flour.", "A wheelchair is durable medical equipment."]
    body = (OS_REQUEST.replace("${parameters.documents}", json.dumps(docs))
            .replace("${parameters.query}", json.dumps("what is durable medical equipment")[1:-1])
            .replace("${parameters.top_n}", str(len(docs))))
    status, answer, _ = server.call("POST", "/v1/rerank", raw=body.encode())
    assert status == 200
    by_index = {r["index"]: r["relevance_score"] for r in answer["results"]}
    scores = [by_index[i] for i in range(len(docs))]  # what the post-process function hands the processor
    assert scores[1] > scores[0]


def test_search_page_and_search_endpoint_with_an_index(dl19, service, tmp_path):
    """/search: BM25 over an index of the store's passages, reranked; per-stage ms; the page is served."""
    pytest.importorskip("pyserini")
    from ranker.first_stage.bm25 import build_index
    from ranker.fusion import interpolate
    from ranker.rerank.fused import model_weight
    from ranker.types import Doc, ScoredDoc

    index = tmp_path / "index"
    build_index([Doc(d, t) for d, t in dl19["texts"].items()], index)
    config = ServeConfig(store=str(dl19["root"] / "store"), model=str(ROOT / "models" / "twinbert"),
                         index=str(index))
    with running(config, RerankService(config)) as client:
        from urllib.parse import quote

        query = dl19["queries"][QUERIES[0]]  # its own BM25 candidates are in the index: plenty of hits
        status, body, _ = client.call("GET", f"/search?q={quote(query)}&k=5&depth=50")
        assert status == 200 and len(body["hits"]) == 5 and body["meta"]["by_id"] == body["meta"]["depth"]
        assert [h["rank"] for h in body["hits"]] == [1, 2, 3, 4, 5] and {"bm25", "total"} <= set(body["ms"])
        assert body["hits"] == sorted(body["hits"], key=lambda h: -h["score"])
        # the score is the student's fused with BM25's by rank run's rule, over all the hits
        status, full, _ = client.call("GET", f"/search?q={quote(query)}&k=50&depth=50")
        hits = full["hits"]
        expected = interpolate({"q": [ScoredDoc("q", h["docno"], h["bm25_score"]) for h in hits]},
                               {"q": [ScoredDoc("q", h["docno"], h["student_score"]) for h in hits]},
                               model_weight(ROOT / "models" / "twinbert"))["q"]
        assert [h["score"] for h in hits] == pytest.approx([d.score for d in expected])
        status, body, _ = client.call("GET", "/search?q=x&k=20&depth=10")
        assert status == 422 and body["error"]["field"] == "k"
        status, page, _ = client.call("GET", "/")
        assert status == 200 and "<form id=\"search\">" in page
        docs = (ROOT / "docs" / "serving.md").read_text()
        block = docs[docs.index("```bash\ncurl") + len("```bash\n"):]
        commands = block[:block.index("```")].replace("\\\n", " ").splitlines()
        assert len(commands) == 4
        for command in commands:  # docs/serving.md's curl line of each route, as printed
            done = subprocess.run(command.replace("127.0.0.1:8000", f"127.0.0.1:{client.port}"), shell=True,
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and json.loads(done.stdout), (command, done.stderr)


def test_a_load_test_refuses_other_addresses():
    from ranker.errors import RankerError
    from ranker.serve.loadtest import loopback

    assert loopback("http://127.0.0.1:8000") == ("127.0.0.1", 8000)
    for url in ("http://10.0.0.1:8000", "http://example.com:80", "http://127.0.0.1"):
        with pytest.raises(RankerError, match="loopback"):
            loopback(url)


@pytest.mark.slow
def test_rank_bench_serve_reports_each_level(dl19, tmp_path):
    out = tmp_path / "bench.json"
    rank("bench-serve", "--topics", dl19["topics"], "--candidates", dl19["root"] / "candidates.trec", "--store",
         dl19["root"] / "store", "--model", ROOT / "models" / "twinbert", "--collection", dl19["collection"],
         "--concurrency", 1, "--concurrency", 4, "--seconds", 1, "--output", out)
    results = json.loads(out.read_text())["results"]
    assert [(r["mode"], r["concurrency"]) for r in results] == [("id", 1), ("id", 4), ("text", 1), ("text", 4)]
    assert all(r["requests"] > 0 and r["errors"] == 0 for r in results)



CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
def test_the_search_page_in_a_real_browser(dl19, tmp_path):
    """Headless Chromium types a query into the page and reads the reranked table (BM25 ranks beside)."""
    import os

    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ranker.first_stage.bm25 import build_index
    from ranker.types import Doc

    index = tmp_path / "index"
    build_index([Doc(d, t) for d, t in dl19["texts"].items()], index)
    config = ServeConfig(store=str(dl19["root"] / "store"), model=str(ROOT / "models" / "twinbert"),
                         index=str(index))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(flag)
    with running(config, RerankService(config)) as client:
        browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            browser.get(f"http://127.0.0.1:{client.port}/")
            box = browser.find_element(By.ID, "q")
            box.send_keys(dl19["queries"][QUERIES[0]])
            browser.find_element(By.CSS_SELECTOR, "#search button").click()
            WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "tr.hit"))
            rows = browser.find_elements(By.CSS_SELECTOR, "tr.hit")
            assert len(rows) == 10
            cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]
            assert [c[0] for c in cells] == [str(i) for i in range(1, 11)] and all(c[2] for c in cells)
            assert "BM25" in browser.find_element(By.ID, "stages").text
            screenshot = Path(os.environ.get("RANKER_SCREENSHOT") or tmp_path / "page.png")
            browser.save_screenshot(str(screenshot))
            assert screenshot.stat().st_size > 10_000
        finally:
            browser.quit()


@contextlib.contextmanager
def stub_server(answer) -> Iterator[str]:
    """A plain HTTP server on a loopback port whose POST status is ``answer(body)``; its URL."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(answer(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


def test_the_load_test_counts_every_non_2xx_answer_as_an_error_and_times_only_answers():
    import itertools

    from ranker.serve.loadtest import closed_loop

    answers = itertools.cycle([200, 404, 200, 429])
    with stub_server(lambda body: next(answers)) as url:
        result = closed_loop(url, "/v1/rerank", [b"{}"], 1, 0.5)
    total = sum(result.statuses.values())
    assert total >= 4 and result.errors == result.statuses.get("404", 0) + result.statuses.get("429", 0) > 0
    assert result.requests == result.statuses["200"] == total - result.errors


def test_the_mixed_load_level_reports_heavy_and_light_clients_apart():
    """One client of four sends slow requests (the server sleeps on bodies marked heavy): the light clients'
    figures are reported apart, so what the heavy one costs them shows."""
    from ranker.serve.loadtest import mixed_loop

    def answer(body: bytes) -> int:
        if b"heavy" in body:
            time.sleep(0.2)
        return 200

    with stub_server(answer) as url:
        light, heavy = mixed_loop(url, "/v1/rerank", [b"{}"], [b'{"heavy": 1}'], 4, 1, 1.0)
    assert (light.mode, light.concurrency, heavy.mode, heavy.concurrency) == ("mixed-light", 3, "mixed-heavy", 1)
    assert heavy.p50_ms >= 200 > light.p50_ms and light.requests > 10 * heavy.requests > 0
    assert light.errors == heavy.errors == 0


def test_the_listening_socket_gives_connections_tcp_nodelay():
    """rank serve binds its socket itself (a busy port fails before the model loads); asyncio then sets
    TCP_NODELAY on accepted connections only for a socket made with IPPROTO_TCP (else each response waited out
    Nagle's algorithm and the client's delayed ACK, ~40 ms)."""
    import socket

    from ranker.cli.serve import _listen

    listener = _listen("127.0.0.1", 0)
    found: list[int] = []

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport):
            found.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    async def accept_one() -> None:
        server = await asyncio.get_running_loop().create_server(Accepted, sock=listener)
        with socket.create_connection(listener.getsockname()):
            for _ in range(100):
                if found:
                    break
                await asyncio.sleep(0.01)
        server.close()

    asyncio.run(accept_one())
    assert found and found[0] != 0


def test_edits_committed_while_serving_are_picked_up_by_the_next_request_without_an_error(dl19, service, tmp_path):
    """rank store add/delete/compact on a served store: requests during the edits all answer 200; the next
    request after each commit sees it (the new passage found, the deleted one 404, the compacted store served)."""
    import shutil

    from ranker.store.edit import add_to_store, compact_store, delete_from_store

    store = tmp_path / "store"
    shutil.copytree(dl19["root"] / "store", store)
    docnos = sorted(dl19["texts"])
    stable, doomed = docnos[:20], docnos[-1]
    config = ServeConfig(store=str(store), model=str(ROOT / "models" / "twinbert"), threads=1)
    with running(config, RerankService(config)) as client:
        statuses, stop = [], threading.Event()

        def load() -> None:
            while not stop.is_set():
                statuses.append(client.call("POST", "/v1/rerank", {"query": "what is a bank",
                                                                   "documents": [{"id": d} for d in stable]})[0])

        threads = [threading.Thread(target=load) for _ in range(2)]
        for thread in threads:
            thread.start()
        add_to_store(service.model, [("new-passage", "a bank is a financial institution that accepts deposits")],
                     store)
        status, body, _ = client.call("POST", "/v1/rerank", {"query": "bank", "documents": [{"id": "new-passage"}]})
        assert status == 200 and body["meta"]["ranker"]["by_id"] == 1
        delete_from_store(store, [doomed])
        status, body, _ = client.call("POST", "/v1/rerank", {"query": "bank", "documents": [{"id": doomed}]})
        assert status == 404 and body["error"]["field"] == "documents[0].id"
        compact_store(store)
        status, body, _ = client.call("POST", "/v1/rerank", {"query": "bank", "documents": [{"id": "new-passage"}]})
        assert status == 200
        stop.set()
        for thread in threads:
            thread.join()
        health = client.call("GET", "/health")[1]
        assert health["store"]["generation"] == 3 and health["store"]["passages"] == len(docnos)
    assert statuses and set(statuses) == {200}


def test_connections_that_send_no_headers_or_send_them_slowly_are_closed(dl19, service):
    """Idle new connections and headers a byte at a time (slowloris) are closed after --header-timeout; a client
    that sends its request in time is answered, also on a kept-alive connection."""
    import socket

    config = ServeConfig(store=str(dl19["root"] / "store"), header_timeout_s=0.5, keep_alive_s=30)

    def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
        sock.settimeout(0.1)
        deadline = time.monotonic() + seconds
        for byte in [trickle[i:i + 1] for i in range(len(trickle))] or [b""]:
            if byte:
                with contextlib.suppress(OSError):
                    sock.send(byte)
            with contextlib.suppress(TimeoutError):
                if sock.recv(1024) == b"":
                    return True
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                if sock.recv(1024) == b"":
                    return True
        return False

    with running(config, service) as client:
        idle = [socket.create_connection(("127.0.0.1", client.port)) for _ in range(20)]
        slow = socket.create_connection(("127.0.0.1", client.port))
        assert closed_within(slow, 5, b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        assert all(closed_within(sock, 5) for sock in idle)
        kept = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
        for _ in range(2):  # two requests on one connection, the second 0.3 s after the first answer
            kept.request("GET", "/health")
            response = kept.getresponse()
            assert response.status == 200 and json.loads(response.read())["status"] == "ok"
            time.sleep(0.3)
        kept.close()
        assert client.call("GET", "/health")[0] == 200
