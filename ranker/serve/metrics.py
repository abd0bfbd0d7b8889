"""The server's Prometheus series: requests and latency by route template, query batch sizes, queries cut to the
query cap, and how each document's vector was found."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

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
