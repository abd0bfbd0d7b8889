"""The latency benchmark's budget: a slow reranker is timed over fewer queries, never fewer than asked."""
from __future__ import annotations

from ranker.eval import bench
from ranker.types import Query, ScoredDoc


class Clock:
    """A stand-in for time.perf_counter that moves only when the fake reranker works."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SlowReranker:
    """Takes ``seconds`` of the fake clock per query; counts the queries it was asked to rerank."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock, self.seconds, self.calls = clock, seconds, 0

    def rerank(self, queries, candidates):
        self.clock.now += self.seconds
        self.calls += 1
        return candidates


def candidates(n: int):
    ranking = {f"q{i}": [ScoredDoc(f"q{i}", f"d{i}", 1.0)] for i in range(n)}
    return ranking, {qid: Query(qid, "text") for qid in ranking}


def test_a_budget_stops_within_the_first_pass_after_the_minimum_queries(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    ranking, queries = candidates(43)
    slow = SlowReranker(clock, 3.0)
    latency = bench.time_reranker("slow", slow, queries, ranking, repeats=3, warmup=2, budget_s=20, min_queries=10)
    assert (latency.queries, latency.repeats) == (10, 1)
    assert slow.calls == 2 + 10
    assert latency.p50_ms == 3000.0


def test_a_fast_reranker_within_its_budget_runs_every_pass(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    ranking, queries = candidates(43)
    fast = SlowReranker(clock, 0.001)
    latency = bench.time_reranker("fast", fast, queries, ranking, repeats=3, warmup=3, budget_s=20)
    assert (latency.queries, latency.repeats) == (43, 3)
    assert fast.calls == 3 + 3 * 43


def test_without_a_budget_a_slow_reranker_is_timed_on_every_query(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    ranking, queries = candidates(12)
    latency = bench.time_reranker("slow", SlowReranker(clock, 3.0), queries, ranking, repeats=2, warmup=0)
    assert (latency.queries, latency.repeats) == (12, 2)
