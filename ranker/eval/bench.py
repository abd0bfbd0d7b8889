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

    def as_dict(self) -> dict:
        return asdict(self)


def time_reranker(name: str, reranker: Reranker, queries: Mapping[str, Query], candidates: Ranking,
                  repeats: int = 3, warmup: int = 3) -> Latency:
    """Rerank each query alone, ``warmup`` queries first untimed, then every query ``repeats`` times."""
    qids = [q for q in candidates if q in queries]
    for qid in qids[:warmup]:
        reranker.rerank({qid: queries[qid]}, {qid: candidates[qid]})
    times = []
    for _ in range(repeats):
        for qid in qids:
            start = time.perf_counter()
            reranker.rerank({qid: queries[qid]}, {qid: candidates[qid]})
            times.append(1000 * (time.perf_counter() - start))
    ms = np.asarray(times)
    return Latency(name, float(np.percentile(ms, 50)), float(np.percentile(ms, 95)), float(ms.mean()), len(qids),
                   repeats, float(np.mean([len(candidates[q]) for q in qids])))
