"""Closed-loop load against a running server: N clients, each sending its next request when the last returned.

Only loopback addresses are targets (a load test never leaves the machine). Latency is measured per request
from send to the last byte read; status codes are counted, 5xx and connection failures as errors.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
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
