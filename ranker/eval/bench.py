"""Latency benchmark: each reranker on the same candidates in one process, one query at a time."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from ranker.pipeline import Reranker
from ranker.types import Query, Ranking


@dataclass(frozen=True)
class Latency:
    """Milliseconds per query over every (repeat, query) measured after the warm-up."""

    name: str
    p50_ms: float
    p95_ms: float
    mean_ms: float
    queries: int
    repeats: int
    candidates_per_query: float
    ran: str | None = None  # what actually ran, where it differs from the name's (a backend this CPU lacks)

    def as_dict(self) -> dict:
        return asdict(self)


def time_reranker(name: str, reranker: Reranker, queries: Mapping[str, Query], candidates: Ranking,
                  repeats: int = 3, warmup: int = 3, budget_s: float | None = None,
                  min_queries: int = 10) -> Latency:
    """Rerank each query alone, ``warmup`` queries first untimed, then every query ``repeats`` times. Once
    ``budget_s`` seconds are spent timing stops, after at least ``min_queries`` timed queries, so a reranker
    that takes seconds a query (a cross-encoder) is timed over fewer; ``queries`` then counts those timed."""
    qids = [q for q in candidates if q in queries]
    for qid in qids[:warmup]:
        reranker.rerank({qid: queries[qid]}, {qid: candidates[qid]})
    times: list[float] = []
    started = time.perf_counter()
    for qid in [q for _ in range(repeats) for q in qids]:
        if budget_s is not None and len(times) >= min_queries and time.perf_counter() - started >= budget_s:
            break
        start = time.perf_counter()
        reranker.rerank({qid: queries[qid]}, {qid: candidates[qid]})
        times.append(1000 * (time.perf_counter() - start))
    ms = np.asarray(times)
    timed = qids[:len(times)]  # every query, or the first ones a budget let through
    return Latency(name, float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.mean()), len(timed),
                   -(-len(times) // len(qids)), float(np.mean([len(candidates[q]) for q in timed])))


def latency_rows(bench: dict, reference: str | None = None) -> list[list[str]]:
    """Markdown rows of a ``rank bench --output`` JSON: each result's p50, p95, passes, its p50 as a multiple of
    ``reference``'s (default: the fastest twinbert backend) and, for twinbert, of the float32 floor."""
    results = bench["results"]
    students = [r for r in results if r["name"].startswith("twinbert")]
    base = next((r for r in results if r["name"] == reference), None) or min(
        students or results, key=lambda r: r["p50_ms"])
    floor = (bench.get("floor") or {}).get("floor_ms")
    rows = []
    for r in sorted(results, key=lambda r: r["p50_ms"]):
        vs_floor = f"{r['p50_ms'] / floor:.2f}" if floor and r["name"].startswith("twinbert") else "—"
        ran = f" (ran {r['ran']})" if r.get("ran") else ""
        rows.append([f"`{r['name']}`{ran}", f"{r['p50_ms']:,.2f}", f"{r['p95_ms']:,.2f}",
                     f"{r['queries']} × {r['repeats']}", f"{r['p50_ms'] / base['p50_ms']:,.1f}", vs_floor])
    return rows


def floor_sentence(bench: dict) -> str:
    """One line on the floor a benchmark measured, or an empty string."""
    floor = bench.get("floor")
    if not floor:
        return ""
    return (f"Floor: one query is {floor['mflops']:.0f} MFLOP ({floor['layers']} layers × {floor['hidden']}, "
            f"feed-forward {floor['intermediate']}, the benchmark's median {floor['tokens']} tokens); this CPU's "
            f"float32 matrix multiply ran at {floor['gflops_per_s']:.0f} GFLOP/s on {floor['threads']} thread(s), "
            f"so float32 cannot encode it in under {floor['floor_ms']:.2f} ms (`ranker.eval.floor`); int8 "
            "multiply-adds run faster than float32 ones, so the int8 backend is not bound by that floor.")


def encode_throughput(model: str, texts: list[str], backends: list[str], batch_size: int = 16) -> list[dict]:
    """Passages per second of the bi-encoder ``model`` on each backend over the same ``texts`` (after one untimed
    batch), the mean and smallest cosine of each backend's vectors to the first backend's, and the process's peak
    memory while that backend loaded and encoded (Linux; ``None`` elsewhere)."""
    import gc

    from ranker.models.biencoder import BiEncoder

    results, first = [], None
    for backend in backends:
        gc.collect()
        reset_peak_rss()
        encoder = BiEncoder(model, batch_size=batch_size, device="cpu", progress=False, backend=backend)
        encoder.encode(texts[:batch_size])
        start = time.perf_counter()
        vectors = encoder.encode(texts)
        seconds = time.perf_counter() - start
        first = vectors if first is None else first
        cosine = (vectors * first).sum(1)
        results.append({"backend": backend, "passages": len(texts), "seconds": round(seconds, 2),
                        "passages_per_s": round(len(texts) / seconds, 2),
                        "mean_cosine_to_first": round(float(cosine.mean()), 6),
                        "min_cosine_to_first": round(float(cosine.min()), 6), "peak_rss_mb": peak_rss_mb()})
        del encoder
    return results


def reset_peak_rss() -> None:
    """Start this process's peak memory (``VmHWM``) afresh from what it holds now (Linux's ``clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float | None:
    """This process's peak resident memory in MB since it started or since :func:`reset_peak_rss` (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
