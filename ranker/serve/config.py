"""``rank serve``'s settings, as a plain dataclass (no torch needed to read the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from ranker.models.config import DEFAULT_QUERY_BACKEND


@dataclass(frozen=True)
class ServeConfig:
    """How ``rank serve`` runs.

    Attributes:
        store: The embedding store (built by ``rank encode`` with ``model``).
        model: The TwinBERT folder; ``None``: the shipped ``twinbert``.
        index: A Lucene index for ``/search`` (BM25 first stage, passage text).
        host: Interface to listen on (loopback by default).
        port: Port (0: any free one).
        max_batch: Most queries per forward pass of the query tower.
        max_wait_ms: How long a query waits for others to share its forward pass.
        max_queue: Most queries waiting; more are answered 503 with ``Retry-After``.
        timeout_s: A request still waiting after this long is answered 504.
        max_documents: Most documents per request (413 above); more than ``encode_batch`` unseen texts are
            encoded in several forward passes, never refused for that.
        encode_batch: Unseen passages per forward pass of the document tower; each pass is one turn on the model
            thread, so other requests' queries run between a request's passes.
        max_encode: Most unseen passages one request may have encoded (413 above: add them to the store).
        max_text_chars: Longest document text accepted (413 above).
        max_query_chars: Longest query accepted (413 above).
        max_query_terms: Most words in a ``/search`` query (413 above), checked before BM25 runs.
        max_json_values: Most JSON values (arrays, objects, keys, elements) in a body, counted before it is parsed
            (413 above); ``None``: 20 for each of ``max_documents``.
        threads: torch (and ONNX Runtime) CPU threads.
        query_backend: What runs the query tower (:data:`ranker.models.config.QUERY_BACKENDS`).
        max_body_bytes: Largest request body (413 above; checked by ``Content-Length`` and while it streams in).
        read_timeout_s: Longest wait for the next part of a body (408 after).
        body_timeout_s: Longest a whole body may take to arrive (408 after).
        min_body_rate: Slowest a body may arrive, in bytes a second, once five seconds have passed (408 below; 0: no
            minimum).
        keep_alive_s: An idle keep-alive connection is closed after this long.
        header_timeout_s: A connection whose request line and headers have not all arrived this long after it
            opened (or after its previous response) is closed.
        max_connections: Most open connections. A request arriving with more open closes the connection that has
            waited longest without a request at work (silent, idle, or sending its body slowly); only when none
            can be closed is it answered 503 with ``Retry-After``. Keep it under the process's file limit.
        fusion: ``/search``'s ranking: ``bm25`` (the student's score fused with BM25's, as ``rank run``) or
            ``none`` (the student alone); the rerank routes score the texts they are sent with the student alone.
        fusion_weight: The student's weight in the fusion; ``None``: the model's own (:mod:`ranker.rerank.fused`).
    """

    store: str
    model: str | None = None
    index: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32
    max_wait_ms: float = 2.0
    max_queue: int = 256
    timeout_s: float = 10.0
    max_documents: int = 1000
    encode_batch: int = 8
    max_encode: int = 512
    max_text_chars: int = 20_000
    max_query_chars: int = 2_000
    max_query_terms: int = 256
    max_json_values: int | None = None
    threads: int = 2
    query_backend: str = DEFAULT_QUERY_BACKEND
    max_body_bytes: int = 32 * 2**20
    read_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    min_body_rate: int = 1024
    keep_alive_s: float = 5.0
    header_timeout_s: float = 10.0
    max_connections: int = 1024
    fusion: str = "bm25"
    fusion_weight: float | None = None

    @property
    def json_values(self) -> int:
        """The limit on a body's JSON values (``max_json_values``, or 20 for each document allowed)."""
        return self.max_json_values if self.max_json_values is not None else 20 * self.max_documents + 100
