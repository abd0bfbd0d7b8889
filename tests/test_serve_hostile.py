"""``rank serve`` against hostile and unlucky clients, on real servers on loopback ports: a store rebuilt under it by
another model, bodies costly to parse, bodies that trickle, connections that hold slots, over-long ``/search``
queries, clients that hang up, oversized headers, and requests that meet a shutdown. Each gets its promised answer
and the neighbours' requests still succeed."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import threading
import time

import pytest

from ranker.serve.config import ServeConfig
from ranker.serve.limits import BODY_GRACE_S, LINGER_S
from ranker.serve.loadtest import long_search_query, many_keys_body, nested_body
from ranker.serve.service import RerankService

from .conftest import ROOT
from .test_serve import GOOD, QUERIES, SlowService, concurrently, dl19, running, service  # noqa: F401 (fixtures)

V1 = ROOT / "models" / "twinbert"


def metric(client, name: str) -> float:
    """A series' value in ``/metrics`` (0 when absent)."""
    _, text, _ = client.call("GET", "/metrics")
    found = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0].split()[-1]) if found else 0.0


def raw_exchange(port: int, data: bytes, read_for: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it or ``read_for`` passes."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_for) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
        answer = b""
        with contextlib.suppress(OSError):
            while more := sock.recv(65536):
                answer += more
        return answer


def test_a_store_rebuilt_by_another_model_is_refused_on_reload_and_the_last_good_commit_answers(
        dl19, tmp_path, caplog):  # noqa: F811
    """rm -r the served store and rebuild it with another model while requests flow: every request answers 200 with
    the loaded model's own ranking, /health names the refusal, one log line, a counter; the store rebuilt by the
    right model is served again; a ranker.json whose fingerprint alone was edited is refused too."""
    from ranker.models.config import TwinBertConfig
    from ranker.models.twinbert import TwinBert
    from ranker.store.build import build_store

    store = tmp_path / "store"
    shutil.copytree(dl19["root"] / "store", store)
    passages = sorted(dl19["texts"].items())
    request = {"query": dl19["queries"][QUERIES[0]], "documents": [{"id": d} for d, _ in passages[:30]]}
    config = ServeConfig(store=str(store), model=str(V1), threads=1)
    with running(config, RerankService(config)) as client, caplog.at_level("INFO", logger="ranker.serve"):
        status, before, _ = client.call("POST", "/v1/rerank", request)
        assert status == 200
        statuses, stop = [], threading.Event()

        def load() -> None:
            while not stop.is_set():
                statuses.append(client.call("POST", "/v1/rerank", request)[0])

        flowing = threading.Thread(target=load)
        flowing.start()
        try:
            shutil.rmtree(store)
            other = TwinBert(TwinBertConfig(num_layers=1), device="cpu")
            build_store(other, passages, store, progress=False)
            for _ in range(3):
                status, after, _ = client.call("POST", "/v1/rerank", request)
                assert status == 200 and after["results"] == before["results"]  # v1's ranking, v1's vectors
        finally:
            stop.set()
            flowing.join()
        health = client.call("GET", "/health")[1]
        refused = health["store"]["refused"]
        assert refused and "fingerprint" in refused["reason"] and health["fingerprint"] != other.fingerprint()
        assert metric(client, 'ranker_store_reloads_total{outcome="refused"}') == 1
        warnings = [r for r in caplog.records if r.levelname == "WARNING" and "fingerprint" in r.getMessage()]
        assert len(warnings) == 1  # once per commit, not once per request

        shutil.rmtree(store)
        shutil.copytree(dl19["root"] / "store", store)  # the right model's store again: served
        assert client.call("POST", "/v1/rerank", request)[1]["results"] == before["results"]
        assert client.call("GET", "/health")[1]["store"]["refused"] is None
        assert metric(client, 'ranker_store_reloads_total{outcome="loaded"}') == 1

        meta = json.loads((store / "ranker.json").read_text())
        meta["model_fingerprint"] = "0" * 64
        (store / "ranker.json.tmp").write_text(json.dumps(meta))
        (store / "ranker.json.tmp").replace(store / "ranker.json")
        assert client.call("POST", "/v1/rerank", request)[0] == 200
        assert "fingerprint" in client.call("GET", "/health")[1]["store"]["refused"]["reason"]
    assert statuses and set(statuses) == {200}


@pytest.fixture(scope="module")
def default_limits(dl19, service):  # noqa: F811
    """A server with the default limits (1,000 documents: 20,100 JSON values a body)."""
    with running(ServeConfig(store=str(dl19["root"] / "store")), service) as client:
        yield client


def test_bodies_costly_to_parse_are_refused_before_parsing_and_do_not_stall_other_requests(default_limits):
    """100,000 lists nested 20 deep (4.3 MB) and 1,000,000 keys (14 MB): 413 naming the body, while /health sent
    meanwhile keeps answering (parsing them took seconds of the event loop)."""
    client, slowest, stop = default_limits, [0.0], threading.Event()
    bodies = [nested_body(), many_keys_body()]  # built first: this process runs the server too

    def health() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            assert client.call("GET", "/health")[0] == 200
            slowest[0] = max(slowest[0], time.perf_counter() - started)

    watcher = threading.Thread(target=health)
    watcher.start()
    try:
        for body in bodies:
            status, error, _ = client.call("POST", "/v1/rerank", raw=body)
            assert status == 413 and error["error"]["field"] == "body" and "JSON values" in error["error"]["reason"]
    finally:
        stop.set()
        watcher.join()
    assert slowest[0] < 1.0, slowest  # before: 4 s and more
    assert client.call("POST", "/v1/rerank", GOOD)[0] == 200


@pytest.mark.slow
def test_a_trickled_body_gets_408_by_its_deadline_or_its_rate(dl19, service):  # noqa: F811
    """A body sent a byte at a time (each byte within the read timeout) is answered 408 in the one error shape: by
    the minimum rate once its grace has passed, and by the whole-body deadline."""
    head = b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"

    def trickle(port: int) -> tuple[bytes, float]:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(head)
            sock.settimeout(0.3)
            answer = b""
            while time.monotonic() - started < 20:
                try:
                    sock.send(b" ")
                    more = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:  # reset: the server closed while bytes were on their way
                    break
                if not more:
                    break
                answer += more
            return answer, time.monotonic() - started

    # the answer is read until the server closes, which it does LINGER_S after answering
    for limits, reason, answered_by in [({"min_body_rate": 1000}, b"slower than", BODY_GRACE_S),
                                        ({"min_body_rate": 0, "body_timeout_s": 1.5}, b"did not all arrive", 1.5)]:
        with running(ServeConfig(store=str(dl19["root"] / "store"), **limits), service) as client:
            answer, took = trickle(client.port)
            assert answer.startswith(b"HTTP/1.1 408") and reason in answer and b'"request_id"' in answer, answer
            assert took < answered_by + LINGER_S + 2
            assert client.call("POST", "/v1/rerank", GOOD)[0] == 200


def test_silent_and_trickling_connections_cannot_hold_the_slots(dl19, service):  # noqa: F811
    """Every slot taken by connections that send nothing or trickle a body: ordinary requests are still served (the
    connection waiting longest is closed to make room, counted), and the trickled request is counted apart."""
    config = ServeConfig(store=str(dl19["root"] / "store"), max_connections=16)
    head = b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"
    with running(config, service) as client:
        hostile = [socket.create_connection(("127.0.0.1", client.port)) for _ in range(16)]
        for sock in hostile[:6]:
            sock.sendall(head)
        time.sleep(1.5)  # past the second a connection must wait before it may be closed for room
        try:
            statuses = [client.call("POST", "/v1/rerank", GOOD)[0] for _ in range(10)]
            statuses += [status for status, _, _ in concurrently(client, 8, GOOD)]
        finally:
            for sock in hostile:
                sock.close()
        assert statuses == [200] * 18
        assert metric(client, "ranker_connections_evicted_total") >= 2
        _, text, _ = client.call("GET", "/metrics")
        assert 'status="500"' not in text


def test_when_every_slot_is_serving_the_503_has_retry_after_and_the_one_shape():
    fake = SlowService(1.0)
    with running(ServeConfig(store="-", max_connections=3, max_wait_ms=0, max_batch=1), fake) as client:
        results = concurrently(client, 6, GOOD)
    busy = [(body, headers) for status, body, headers in results if status == 503]
    assert busy and all(status in (200, 503) for status, _, _ in results)
    body, headers = busy[0]
    assert body["error"]["field"] == "connection" and headers["retry-after"] == "1" and body["error"]["request_id"]


def test_search_checks_q_before_bm25_and_head_works(dl19, service, tmp_path):  # noqa: F811
    """An over-long or over-wordy q, or one the query tower reads nothing of, is refused before BM25 runs, naming q
    (also a 98 KB one); HEAD /search answers."""
    pytest.importorskip("pyserini")
    from urllib.parse import quote

    from ranker.first_stage.bm25 import build_index
    from ranker.types import Doc

    index = tmp_path / "index"
    build_index([Doc(d, t) for d, t in dl19["texts"].items()], index)
    config = ServeConfig(store=str(dl19["root"] / "store"), model=str(V1), index=str(index), max_query_terms=50)
    with running(config, RerankService(config)) as client:
        for q, status, words in [(long_search_query(1_400), 413, "characters"), ("a " * 60, 413, "words"),
                                 ("\u200b\u0301", 422, "reads")]:
            got, error, _ = client.call("GET", f"/search?q={quote(q)}")
            assert got == status and error["error"]["field"] == "q" and words in error["error"]["reason"], error
        answer = raw_exchange(client.port, b"GET /search?q=" + long_search_query().replace(" ", "+").encode()
                              + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 413") and b'"field": "q"' in answer.replace(b'":"', b'": "')
        assert head(client.port, "/search?q=bank") == (200, b"")


def head(port: int, path: str) -> tuple[int, bytes]:
    """A HEAD request's status and body (which must be empty)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("HEAD", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_client_that_hangs_up_is_counted_apart_from_server_errors(default_limits, caplog):
    client = default_limits
    with caplog.at_level("WARNING", logger="ranker.serve"):
        with socket.create_connection(("127.0.0.1", client.port)) as sock:
            sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"query\": ")
            time.sleep(0.3)
        time.sleep(0.5)
    assert metric(client, 'ranker_client_closed_requests_total{endpoint="/v1/rerank"}') >= 1
    _, text, _ = client.call("GET", "/metrics")
    assert 'status="500"' not in text and not [r for r in caplog.records if r.levelname == "ERROR"]


def test_refusals_before_any_route_answer_the_one_error_shape(default_limits):
    """A Content-Length over the limit (413, with a request id), headers over h11's limit (431: read, not reset), a
    malformed request line (400), HEAD /metrics, and OpenAPI documenting the error statuses in the one shape."""
    client = default_limits
    answer = raw_exchange(client.port, b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413") and b'"request_id"' in answer
    answer = raw_exchange(client.port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2**20 + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431") and b"application/json" in answer
    answer = raw_exchange(client.port, b"NOT HTTP\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") and b'"field": "request"' in answer.replace(b'":"', b'": "')
    assert head(client.port, "/metrics") == (200, b"")
    schema = client.call("GET", "/openapi.json")[1]
    search = schema["paths"]["/search"]["get"]["responses"]
    assert {"200", "409", "413", "422", "503", "504"} <= set(search)
    assert search["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert "text/plain" in json.dumps(schema["paths"]["/metrics"]["get"]["responses"])


def test_a_request_sent_on_a_kept_alive_connection_as_shutdown_begins_is_answered(dl19, service):  # noqa: F811
    with running(ServeConfig(store=str(dl19["root"] / "store")), service) as client:
        connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
        connection.request("GET", "/health")
        assert connection.getresponse().read()
        client.server.should_exit = True  # as SIGTERM does
        time.sleep(0.15)  # uvicorn's main loop notices within 0.1 s
        connection.request("POST", "/v1/rerank", json.dumps(GOOD), {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and response.getheader("connection") == "close"
        connection.close()


@pytest.mark.parametrize("seed", range(5))
def test_json_values_are_counted_alike_however_the_body_is_cut_and_strings_hide_nothing(seed):
    """JsonValues over a body cut into random parts equals its count over the whole body; commas, brackets, quotes
    and backslashes inside strings are not counted; bodies of many keys or nested lists are over the limit."""
    import random

    from ranker.serve.errors import JsonValues

    def count(body: bytes, cuts: list[int], limit: int = 10**9) -> JsonValues:
        values = JsonValues(limit)
        for start, end in zip([0, *cuts], [*cuts, len(body)], strict=True):
            values.feed(body[start:end])
        return values

    pick = random.Random(seed)
    texts = ["".join(pick.choice('ab ,[{"\\\\}]:') for _ in range(pick.randint(0, 60))) for _ in range(40)]
    body = json.dumps({"query": "q, [x]", "documents": texts, "top_n": 3}).encode()
    whole, cut = count(body, []), count(body, sorted(pick.sample(range(1, len(body)), 30)))
    assert (whole.outside, whole.strings) == (cut.outside, cut.strings)
    assert whole.values == 1 + 2 + len(texts) + 1  # the object, its three keys' commas and the list's elements
    for hostile in (nested_body(500), many_keys_body(5_000)):  # 10,500 and 5,000 values and more
        assert count(hostile, list(range(4096, len(hostile), 4096)), 20_000).values < 20_000
        assert count(hostile, list(range(4096, len(hostile), 4096)), 3_000).over
