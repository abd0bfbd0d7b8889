"""The HTTP server: FastAPI routes that adapt Cohere's, TEI's and a search shape to :class:`RerankService`.

Built by :func:`create_app` (tests start it on a free loopback port); the model and store load before the
server accepts a connection, so ``/health`` answers only when it can serve. All model work runs on one worker
thread, off the event loop; queries arriving together share one forward pass (:class:`QueryBatcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ranker.rerank.store import EmbeddingStore
from ranker.serve.batcher import QueryBatcher, QueueFull
from ranker.serve.config import ServeConfig
from ranker.serve.errors import ApiError, parse_body
from ranker.serve.limits import BodyLimits
from ranker.serve.page import SEARCH_PAGE
from ranker.serve.schemas import (
    CohereRerankRequest,
    CohereRerankResponse,
    CohereV2RerankRequest,
    CohereV2RerankResponse,
    DocumentObject,
    SearchResponse,
    TeiRerankRequest,
    TeiResult,
    openapi_bodies,
)
from ranker.serve.service import RerankService

log = logging.getLogger("ranker.serve")
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
        self.documents = Counter("ranker_documents", "Documents reranked, by how their vector was found",
                                 ["source"], registry=self.registry)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def create_app(config: ServeConfig, service: RerankService | None = None) -> FastAPI:
    """The app for ``config``; ``service`` (default: loaded from ``config`` at start-up) may be shared."""
    metrics = Metrics()
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["service"] = service or RerankService(config)
        state["executor"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ranker-model")
        state["batcher"] = QueryBatcher(state["service"].encode_queries, state["executor"], config.max_batch,
                                        config.max_wait_ms, config.max_queue, metrics.batch.observe)
        state["batcher"].start()
        yield
        await state["batcher"].stop()
        state["executor"].shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="ranker", summary="TwinBERT reranking from cached passage vectors", lifespan=lifespan)

    # inside observe (registered next, so outermost): a body refused early is still counted and given an id
    app.add_middleware(BodyLimits, max_bytes=config.max_body_bytes, read_timeout_s=config.read_timeout_s)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        request.state.request_id = request_id = _request_id(request.headers.get("x-request-id"))
        try:
            response = await call_next(request)
        except ApiError as e:
            response = error_response(e, request)
        except Exception as e:  # a fault of the server: one line with the request id, the traceback at debug level
            log.error("%s %s -> 500 (request %s): %s: %s", request.method, request.url.path, request_id,
                      type(e).__name__, (str(e).strip().splitlines() or [""])[0][:200])
            log.debug("request %s", request_id, exc_info=True)
            response = error_response(ApiError(500, "server", "internal error; the server log names this "
                                                              "request id"), request)
        # by route template, never the raw path: unknown paths share one label (a scan cannot grow the scrape)
        endpoint = getattr(request.scope.get("route"), "path", None) or "unmatched"
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        response.headers["X-Request-Id"] = request_id
        if 400 <= response.status_code < 500:
            log.info("%s %s -> %d (request %s)", request.method, request.url.path, response.status_code, request_id)
        return response

    def error_response(e: ApiError, request: Request) -> JSONResponse:
        return JSONResponse(e.body(getattr(request.state, "request_id", None)), e.status, headers=e.headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e, request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        """404 and 405 from the router, in the one error shape (the field is the path or the method)."""
        field = "method" if e.status_code == 405 else "path"
        error = ApiError(e.status_code, field, str(e.detail), getattr(e, "headers", None))
        return error_response(error, request)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError) -> JSONResponse:
        """A query parameter of the wrong type (``/search?k=many``), in the one error shape."""
        first = e.errors()[0]
        return error_response(ApiError(422, str(first["loc"][-1]), first["msg"]), request)

    async def query_vector(text: str, field: str, deadline: float) -> np.ndarray:
        if not text.strip():
            raise ApiError(422, field, "empty: a query needs some text")
        if len(text) > config.max_query_chars:
            raise ApiError(413, field, f"{len(text)} characters, more than the limit {config.max_query_chars}")
        try:
            return await state["batcher"].submit(text, max(0.001, deadline - time.monotonic()))
        except QueueFull:
            raise ApiError(503, "query", f"{config.max_queue} queries are waiting: retry shortly",
                           {"Retry-After": "1"}) from None
        except TimeoutError:
            raise ApiError(504, "query", f"not answered within {config.timeout_s} s") from None

    def check_documents(ids: list[str | None], texts: list[str | None], field: str) -> None:
        if not ids:
            raise ApiError(422, field, "empty: nothing to rerank")
        if len(ids) > config.max_documents:
            raise ApiError(413, field, f"{len(ids)} documents, more than the limit {config.max_documents}")
        for i, text in enumerate(texts):
            if text is not None and len(text) > config.max_text_chars:
                raise ApiError(413, f"{field}[{i}]", f"{len(text)} characters, more than the limit "
                                                     f"{config.max_text_chars}")

    async def score(q: np.ndarray, ids: list[str | None], texts: list[str | None], field: str,
                    deadline: float, store: EmbeddingStore | None = None) -> tuple:
        """Logits of the documents against the query vector, and where their vectors came from (one commit of the
        store: ``store``, or the last); unseen texts are encoded a batch a turn on the model thread, each turn
        within what is left of the request's time."""
        service = state["service"]
        store = store or service.snapshot()
        try:
            rows = service.locate(store, ids, texts)
        except KeyError as e:
            position, docno = e.args[0]
            raise ApiError(404, f"{field}[{position}].id", f"{docno!r} is not in the embedding store") from None
        unseen = [texts[i] or "" for i, row in enumerate(rows) if row is None]
        if len(unseen) > config.max_encode:
            raise ApiError(413, field, f"{len(unseen)} texts are not in the embedding store, more than the "
                                       f"{config.max_encode} a request may encode: add them to the store "
                                       "(rank encode --add)")
        started, parts = time.perf_counter(), []
        for start in range(0, len(unseen), config.encode_batch):  # one batch a turn: queries interleave
            turn = asyncio.get_running_loop().run_in_executor(
                state["executor"], service.encode_passages, unseen[start:start + config.encode_batch])
            try:
                parts.append(await asyncio.wait_for(turn, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise ApiError(504, field, f"its unseen texts were not encoded within {config.timeout_s} s") from None
        passages = service.passages(store, ids, rows, np.concatenate(parts) if parts else None,
                                    1000 * (time.perf_counter() - started))
        logits = service.cross(q, passages.vectors)
        metrics.documents.labels("id").inc(passages.by_id)
        metrics.documents.labels("hash").inc(passages.by_hash)
        metrics.documents.labels("encoded").inc(passages.encoded)
        return logits, passages

    def order(logits: np.ndarray) -> list[int]:
        """Best first; ties by position (the order the documents came in)."""
        return sorted(range(len(logits)), key=lambda i: (-float(logits[i]), i))

    def ranked_texts(docs: list[DocumentObject], fields: list[str] | None) -> list[str | None]:
        """What each document is ranked on: its text, or the ``rank_fields`` values joined by a space."""
        if not fields or fields == ["text"]:
            return [d.text for d in docs]
        texts = []
        for i, d in enumerate(docs):
            values = d.model_dump()
            missing = next((f for f in fields if not isinstance(values.get(f), str)), None)
            if missing is not None:
                raise ApiError(422, f"documents[{i}].{missing}", "named by rank_fields, but the document has no "
                                                                  "such text field")
            texts.append(" ".join(values[f] for f in fields))
        return texts

    async def cohere_results(body: CohereRerankRequest | CohereV2RerankRequest, docs: list[DocumentObject],
                             ids: list[str | None], texts: list[str | None], with_documents: bool) -> JSONResponse:
        """The Cohere response (v1 and v2 share it): results best first, ``top_n`` of them."""
        if body.top_n is not None and body.top_n < 1:
            raise ApiError(422, "top_n", f"must be at least 1, got {body.top_n}")
        if body.max_tokens_per_doc is not None and body.max_tokens_per_doc < 1:
            raise ApiError(422, "max_tokens_per_doc", f"must be at least 1, got {body.max_tokens_per_doc}")
        check_documents(ids, texts, "documents")
        service = state["service"]
        cap = body.max_tokens_per_doc
        if cap is not None and cap < service.passage_tokens - 2:  # else the model reads no more than that anyway
            texts = await asyncio.get_running_loop().run_in_executor(state["executor"], service.cut, texts, cap)
        deadline = time.monotonic() + config.timeout_s  # --timeout covers all of the request's model work
        logits, passages = await score(await query_vector(body.query, "query", deadline), ids, texts, "documents",
                                       deadline)
        shown = sigmoid(logits) if not body.raw_scores else logits.astype(np.float64)
        results = []
        for i in order(logits)[: body.top_n or len(docs)]:
            result = {"index": i, "relevance_score": float(shown[i])}
            if with_documents:
                result["document"] = {k: v for k, v in docs[i].model_dump().items() if v is not None}
            results.append(result)
        meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                "ranker": {"by_id": passages.by_id, "by_hash": passages.by_hash, "encoded": passages.encoded,
                           "score": "logit" if body.raw_scores else "sigmoid(logit)",
                           "passage_tokens": min(cap or service.passage_tokens, service.passage_tokens)}}
        return JSONResponse({"id": str(uuid.uuid4()), "results": results, "meta": meta})

    @app.post("/v1/rerank", response_model=CohereRerankResponse)
    async def cohere_rerank(request: Request) -> JSONResponse:
        """Cohere's v1 rerank: ``relevance_score`` is sigmoid(logit) (``raw_scores: true``: the logit)."""
        body = parse_body(await request.body(), CohereRerankRequest)
        docs = [d if isinstance(d, DocumentObject) else DocumentObject(text=d) for d in body.documents]
        texts = ranked_texts(docs, body.rank_fields)
        by_id = not body.rank_fields or body.rank_fields == ["text"]  # else the fields named are what is ranked
        for i, d in enumerate(docs):
            if texts[i] is None and (d.id is None or not by_id):
                raise ApiError(422, f"documents[{i}]", "needs a text or the id of a stored passage")
        ids = [d.id if by_id else None for d in docs]
        return await cohere_results(body, docs, ids, texts, body.return_documents)

    @app.post("/v2/rerank", response_model=CohereV2RerankResponse)
    async def cohere_rerank_v2(request: Request) -> JSONResponse:
        """Cohere's v2 rerank: documents are strings, results carry index and relevance_score."""
        body = parse_body(await request.body(), CohereV2RerankRequest)
        docs = [DocumentObject(text=d) for d in body.documents]
        return await cohere_results(body, docs, [None] * len(docs), list(body.documents), False)

    @app.post("/rerank", response_model=list[TeiResult])
    async def tei_rerank(request: Request) -> JSONResponse:
        """text-embeddings-inference's rerank: a list of ``{index, score}``, best first."""
        body = parse_body(await request.body(), TeiRerankRequest)
        ids, texts = [None] * len(body.texts), list(body.texts)
        check_documents(ids, texts, "texts")
        deadline = time.monotonic() + config.timeout_s
        logits, _ = await score(await query_vector(body.query, "query", deadline), ids, texts, "texts", deadline)
        shown = logits.astype(np.float64) if body.raw_scores else sigmoid(logits)
        return JSONResponse([{"index": i, "score": float(shown[i]), **({"text": body.texts[i]} if body.return_text
                                                                       else {})} for i in order(logits)])

    @app.get("/search", response_model=SearchResponse)
    @app.post("/search", response_model=SearchResponse, operation_id="search_post")
    async def search(q: str = "", k: int = 10, depth: int = 100) -> JSONResponse:
        """BM25 top ``depth`` over the index, reranked by the student; the top ``k`` with per-stage ms."""
        if state["service"].retriever is None:
            raise ApiError(409, "index", "this server was started without --index: /search needs one")
        if not 1 <= depth <= config.max_documents:
            raise ApiError(422, "depth", f"must be between 1 and {config.max_documents}, got {depth}")
        if not 1 <= k <= depth:
            raise ApiError(422, "k", f"must be between 1 and depth ({depth}), got {k}")
        started, deadline = time.perf_counter(), time.monotonic() + config.timeout_s
        encoding = asyncio.ensure_future(query_vector(q, "q", deadline))  # the query tower runs while BM25 searches
        loop = asyncio.get_running_loop()
        try:
            hits = await loop.run_in_executor(state["executor"], state["service"].bm25, q, depth)
        except BaseException:
            encoding.cancel()
            raise
        bm25_ms = 1000 * (time.perf_counter() - started)
        q_vector = await encoding
        if not hits:
            return JSONResponse({"query": q, "hits": [], "ms": {"bm25": round(bm25_ms, 2)}, "meta": {"depth": 0}})
        docnos = [d for d, _, _ in hits]
        store = state["service"].snapshot()
        in_store = [d if d in store else None for d in docnos]
        reranking = time.perf_counter()
        logits, passages = await score(q_vector, in_store, [t for _, _, t in hits], "hits", deadline, store)
        rerank_ms = 1000 * (time.perf_counter() - reranking)
        ranked = order(logits)[:k]
        out = [{"rank": r + 1, "docno": docnos[i], "score": float(logits[i]), "bm25_rank": i + 1,
                "bm25_score": float(hits[i][1]), "text": hits[i][2]} for r, i in enumerate(ranked)]
        total = 1000 * (time.perf_counter() - started)
        return JSONResponse({"query": q, "hits": out,
                             "ms": {"bm25": round(bm25_ms, 2), "rerank": round(rerank_ms, 2),
                                    "passages": round(passages.ms, 2), "total": round(total, 2)},
                             "meta": {"by_id": passages.by_id, "by_hash": passages.by_hash,
                                      "encoded": passages.encoded, "depth": len(hits)}})

    @app.get("/health")
    @app.head("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        if "service" not in state:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse(state["service"].health())

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    @app.head("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> str:
        return SEARCH_PAGE

    def openapi() -> dict:  # the bodies are parsed by hand (errors in one shape), so their models are added here
        if app.openapi_schema is None:
            app.openapi_schema = openapi_bodies(get_openapi(title=app.title, version=app.version, summary=app.summary,
                                                            routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi
    app.state.metrics = metrics
    return app


def _request_id(given: str | None) -> str:
    """The client's ``X-Request-Id`` when it is a short printable token, else a new one."""
    if given and len(given) <= 64 and given.isascii() and given.isprintable() and " " not in given:
        return given
    return uuid.uuid4().hex
