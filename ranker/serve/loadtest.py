"""Closed-loop load against a running server: N clients, each sending its next request when the last returned.

Only loopback addresses are targets (a load test never leaves the machine). Latency is measured per request
from send to the last byte read; status codes are counted, 5xx and connection failures as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import ipaddress
import json
import random
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ranker.errors import RankerError


@dataclass(frozen=True)
class LoadResult:
    """One load level's figures."""

    endpoint: str
    mode: str
    concurrency: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    statuses: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def loopback(url: str) -> tuple[str, int]:
    """Host and port of ``url``; anything but a loopback address is refused."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ok = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = False
    if not ok or parts.port is None:
        raise RankerError(f"{url}: load goes to a loopback address with a port only (127.0.0.1:PORT, [::1]:PORT)")
    return host, parts.port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_loop(url: str, path: str, bodies: Sequence[bytes], concurrency: int, seconds: float,
                mode: str = "") -> LoadResult:
    """``concurrency`` clients POST ``bodies`` (round robin) to ``path`` for ``seconds``. Any answer other than a 2xx,
    and any failed connection, is an error: counted by status, and left out of the latencies and requests/s."""
    runs, elapsed = _clients(url, path, [bodies] * concurrency, seconds)
    return _summary(path, mode, concurrency, runs, elapsed)


def mixed_loop(url: str, path: str, light: Sequence[bytes], heavy: Sequence[bytes], concurrency: int,
               heavy_clients: int, seconds: float) -> tuple[LoadResult, LoadResult]:
    """:func:`closed_loop` where ``heavy_clients`` of the ``concurrency`` clients send ``heavy`` bodies (e.g. many
    texts the store lacks) and the rest ``light`` ones; the figures of each group apart (modes ``mixed-light``,
    ``mixed-heavy``), so what the heavy requests cost their neighbours shows in the light ones' latency."""
    lists = [heavy] * heavy_clients + [light] * (concurrency - heavy_clients)
    runs, elapsed = _clients(url, path, lists, seconds)
    return (_summary(path, "mixed-light", concurrency - heavy_clients, runs[heavy_clients:], elapsed),
            _summary(path, "mixed-heavy", heavy_clients, runs[:heavy_clients], elapsed))


def _clients(url: str, path: str, lists: Sequence[Sequence[bytes]], seconds: float,
             ) -> tuple[list[tuple[list[float], dict[str, int]]], float]:
    """One closed-loop client per body list; each client's latencies of 2xx answers and its status counts."""
    host, port = loopback(url)
    deadline = time.monotonic() + seconds
    runs: list[tuple[list[float], dict[str, int]]] = [([], {}) for _ in lists]

    def client(n: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        bodies, i = lists[n], n
        latencies, statuses = runs[n]
        while time.monotonic() < deadline:
            body = bodies[i % len(bodies)]
            i += len(lists)
            started = time.perf_counter()
            try:
                connection.request("POST", path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException):
                status = "failed"
                connection.close()
                connection = http.client.HTTPConnection(host, port, timeout=60)
            if status.startswith("2"):  # only answers count towards latency and throughput
                latencies.append(1000 * (time.perf_counter() - started))
            statuses[status] = statuses.get(status, 0) + 1
        connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(len(lists))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs, time.monotonic() - started


def _summary(path: str, mode: str, concurrency: int, runs: Sequence[tuple[list[float], dict[str, int]]],
             elapsed: float) -> LoadResult:
    ms = np.array([x for latencies, _ in runs for x in latencies])
    counts: dict[str, int] = {}
    for _, statuses in runs:
        for status, count in statuses.items():
            counts[status] = counts.get(status, 0) + count
    errors = sum(c for s, c in counts.items() if not s.startswith("2"))
    p50, p95, p99 = (float(np.percentile(ms, q)) if len(ms) else float("nan") for q in (50, 95, 99))
    return LoadResult(path, mode, concurrency, round(elapsed, 2), len(ms), round(len(ms) / elapsed, 1),
                      round(p50, 3), round(p95, 3), round(p99, 3), errors, counts)


def nested_body(lists: int = 100_000, depth: int = 20) -> bytes:
    """A rerank body whose unknown field holds ``lists`` lists nested ``depth`` deep (4.3 MB by default): cheap to
    send, costly to parse."""
    nested: object = 0
    for _ in range(depth):
        nested = [nested]
    return json.dumps({"query": "q", "documents": ["a"], "x": [nested] * lists}).encode()


def many_keys_body(keys: int = 1_000_000) -> bytes:
    """A rerank body whose unknown field is an object of ``keys`` keys (14 MB by default)."""
    return json.dumps({"query": "q", "documents": ["a"], "x": {f"k{i}": 0 for i in range(keys)}}).encode()


def long_search_query(words: int = 14_000, seed: int = 0) -> str:
    """``words`` distinct-looking random 6-letter words (a 98 KB query by default)."""
    pick = random.Random(seed)
    return " ".join("".join(pick.choices(string.ascii_lowercase, k=6)) for _ in range(words))


@dataclass
class AttackCounts:
    """What the attackers met: answers by status per kind, and how often a trickling connection was closed."""

    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    trickle_closed: int = 0

    def count(self, kind: str, status: str) -> None:
        kinds = self.statuses.setdefault(kind, {})
        kinds[status] = kinds.get(status, 0) + 1


class Attack:
    """Hostile clients against a loopback server while it is in effect (a context manager): one client loops
    oversized-to-parse bodies (:func:`nested_body`, :func:`many_keys_body`) on ``/v1/rerank``, one (with
    ``search``) loops a 98 KB ``/search`` query, and ``trickle`` connections each send a body one byte every
    ``trickle_every_s`` (reconnecting when closed)."""

    def __init__(self, url: str, trickle: int = 512, search: bool = False, trickle_every_s: float = 5.0):
        self.host, self.port = loopback(url)
        self.trickle, self.search, self.trickle_every_s = trickle, search, trickle_every_s
        self.counts = AttackCounts()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Attack:
        bodies = [nested_body(), many_keys_body()]
        loops = [("parse", lambda i: ("POST", "/v1/rerank", bodies[i % 2]))]
        if self.search:
            path = "/search?q=" + long_search_query().replace(" ", "+")
            loops.append(("search", lambda i: ("GET", path, None)))
        self._threads = [threading.Thread(target=self._loop, args=loop, daemon=True) for loop in loops]
        self._threads.append(threading.Thread(target=lambda: asyncio.run(self._trickle()), daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _loop(self, kind: str, request) -> None:
        i = 0
        while not self._stop.is_set():
            method, path, body = request(i)
            i += 1
            connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                connection.request(method, path, body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                self.counts.count(kind, str(response.status))
            except (OSError, http.client.HTTPException):
                self.counts.count(kind, "failed")
            finally:
                connection.close()

    async def _trickle(self) -> None:
        head = (b"POST /v1/rerank HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n")

        async def one(n: int) -> None:
            await asyncio.sleep(n * 0.002)  # connections open over a second, not all in one burst
            while not self._stop.is_set():
                with contextlib.suppress(OSError):
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                    writer.write(head)
                    while not self._stop.is_set():
                        writer.write(b"{")
                        await writer.drain()
                        with contextlib.suppress(TimeoutError):
                            if await asyncio.wait_for(reader.read(1), self.trickle_every_s) == b"":
                                break  # closed by the server
                            break  # answered (408): the server ends it
                    writer.close()
                    self.counts.trickle_closed += 1
                await asyncio.sleep(0.05)

        async def watch() -> None:
            while not self._stop.is_set():
                await asyncio.sleep(0.1)

        tasks = [asyncio.ensure_future(one(n)) for n in range(self.trickle)]
        await watch()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def rss_mb(pid: int) -> float:
    """Resident memory of a process (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RankerError(f"no memory figure for process {pid}")


class ServerProcess:
    """``rank serve`` in a subprocess on a free loopback port, stopped (SIGTERM) on exit."""

    def __init__(self, *options: str, start_timeout: float = 180, cwd: str | Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen([sys.executable, "-m", "ranker", "serve", *options, "--host", "127.0.0.1",
                                         "--port", str(self.port)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True, cwd=cwd)
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RankerError(f"rank serve did not start: {self.process.stderr.read().strip()[-500:]}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() - started > start_timeout:
                self.stop()
                raise RankerError(f"rank serve did not answer /health within {start_timeout} s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def rerank_bodies(queries: dict[str, str], candidates: dict[str, list[str]], texts: dict[str, str] | None,
                  ) -> list[bytes]:
    """Cohere-shaped bodies, one per query: documents by store id, or (with ``texts``) as their text."""
    bodies = []
    for qid, docnos in candidates.items():
        documents = [{"id": d} for d in docnos] if texts is None else [texts[d] for d in docnos]
        bodies.append(json.dumps({"query": queries[qid], "documents": documents, "top_n": 10}).encode())
    return bodies


def unseen_bodies(queries: dict[str, str], count: int, rounds: int = 4) -> list[bytes]:
    """Cohere-shaped bodies of ``count`` texts no store holds, for the mixed load level (the server never adds what
    it encodes to the store, so every such request encodes all of them)."""
    texts = list(queries.values())
    bodies = []
    for r in range(rounds):
        documents = [f"passage {r}-{i} about {texts[i % len(texts)]}" for i in range(count)]
        bodies.append(json.dumps({"query": texts[r % len(texts)], "documents": documents, "top_n": 10}).encode())
    return bodies
