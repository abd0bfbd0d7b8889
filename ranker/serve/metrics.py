"""The server's Prometheus series: requests and latency by route template, requests the client gave up on, query
batch sizes, queries cut to the query cap, how each document's vector was found, connections closed to make room,
and the store commits met while serving (loaded or refused)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Prometheus series of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("ranker_requests", "Requests by endpoint and status", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("ranker_request_seconds", "Request latency", ["endpoint"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch = Histogram("ranker_query_batch_size", "Queries per forward pass of the query tower",
                               buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry)
        self.queries_truncated = Counter("ranker_queries_truncated", "Queries longer than the query tower's cap "
                                         "(/health's query_max_length), cut to it", registry=self.registry)
        self.documents = Counter("ranker_documents", "Documents reranked, by how their vector was found",
                                 ["source"], registry=self.registry)
        self.client_closed = Counter("ranker_client_closed_requests", "Requests whose client hung up before the "
                                     "answer (nginx's 499; counted apart from server errors)", ["endpoint"],
                                     registry=self.registry)
        self.evicted = Counter("ranker_connections_evicted", "Connections closed to make room for a request while "
                               "every slot was taken, because they had sent nothing or too little for longest",
                               registry=self.registry)

    def count_store_reloads(self, reloads: Callable[[], Mapping[str, int]]) -> None:
        """Expose ``reloads()`` (commits met while serving, by outcome) as ``ranker_store_reloads_total``."""
        self.registry.register(_Reloads(reloads))


class _Reloads:
    """A collector reading the service's reload counts at each scrape."""

    def __init__(self, reloads: Callable[[], Mapping[str, int]]):
        self.reloads = reloads

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("ranker_store_reloads", "Store commits met while serving: loaded, or refused "
                                     "(another model's, or damaged; the last good commit goes on)",
                                     labels=["outcome"])
        counts = self.reloads()
        for outcome in ("loaded", "refused"):
            family.add_metric([outcome], counts.get(outcome, 0))
        yield family
