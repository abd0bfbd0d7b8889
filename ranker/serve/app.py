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

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ranker.serve.config import ServeConfig
from ranker.serve.errors import ApiError, request_id_of
from ranker.serve.metrics import Metrics
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
from ranker.serve.scoring import Scoring, ranked_texts, sigmoid
from ranker.serve.service import RerankService
from ranker.types import best_first

log = logging.getLogger("ranker.serve")


def create_app(config: ServeConfig, service: RerankService | None = None) -> FastAPI:
    """The app for ``config``; ``service`` (default: loaded from ``config`` at start-up) may be shared."""
    metrics = Metrics()
    scoring = Scoring(config, metrics)
    metrics.count_store_reloads(lambda: scoring.service.reloads if scoring.service else {})

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        scoring.start(service)
        yield
        await scoring.stop()

    app = FastAPI(title="ranker", summary="TwinBERT reranking from cached passage vectors", lifespan=lifespan)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        request.state.request_id = request_id = request_id_of(request.headers.get("x-request-id"))
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
        endpoint = _endpoint(request)
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

    @app.post("/v1/rerank", response_model=CohereRerankResponse)
    async def cohere_rerank(request: Request) -> JSONResponse:
        """Cohere's v1 rerank: ``relevance_score`` is sigmoid(logit) (``raw_scores: true``: the logit)."""
        body = await scoring.parse(await request.body(), CohereRerankRequest)
        docs = [d if isinstance(d, DocumentObject) else DocumentObject(text=d) for d in body.documents]
        texts = ranked_texts(docs, body.rank_fields)
        by_id = not body.rank_fields or body.rank_fields == ["text"]  # else the fields named are what is ranked
        for i, d in enumerate(docs):
            if texts[i] is None and (d.id is None or not by_id):
                raise ApiError(422, f"documents[{i}]", "needs a text or the id of a stored passage")
        ids = [d.id if by_id else None for d in docs]
        return await scoring.cohere_results(body, docs, ids, texts, body.return_documents)

    @app.post("/v2/rerank", response_model=CohereV2RerankResponse)
    async def cohere_rerank_v2(request: Request) -> JSONResponse:
        """Cohere's v2 rerank: documents are strings, results carry index and relevance_score."""
        body = await scoring.parse(await request.body(), CohereV2RerankRequest)
        docs = [DocumentObject(text=d) for d in body.documents]
        return await scoring.cohere_results(body, docs, [None] * len(docs), list(body.documents), False)

    @app.post("/rerank", response_model=list[TeiResult])
    async def tei_rerank(request: Request) -> JSONResponse:
        """text-embeddings-inference's rerank: a list of ``{index, score}``, best first."""
        body = await scoring.parse(await request.body(), TeiRerankRequest)
        logits, _, order = await scoring.rerank(body.query, [None] * len(body.texts), list(body.texts), "texts")
        shown = logits.astype(np.float64) if body.raw_scores else sigmoid(logits)
        return JSONResponse([{"index": i, "score": float(shown[i]), **({"text": body.texts[i]} if body.return_text
                                                                       else {})} for i in order])

    @app.get("/search", response_model=SearchResponse)
    @app.head("/search", include_in_schema=False)
    @app.post("/search", response_model=SearchResponse, operation_id="search_post")
    async def search(q: str = "", k: int = 10, depth: int = 100) -> JSONResponse:
        """BM25 top ``depth`` over the index, reranked by the student fused with BM25 (``--fusion``, as ``rank run``);
        the top ``k`` with per-stage ms."""
        service = scoring.service
        if service.retriever is None:
            raise ApiError(409, "index", "this server was started without --index: /search needs one")
        if not 1 <= depth <= config.max_documents:
            raise ApiError(422, "depth", f"must be between 1 and {config.max_documents}, got {depth}")
        if not 1 <= k <= depth:
            raise ApiError(422, "k", f"must be between 1 and depth ({depth}), got {k}")
        scoring.check_query(q, "q", words=True)  # before any retrieval: an over-long q costs nothing
        started, deadline = time.perf_counter(), time.monotonic() + config.timeout_s
        encoding = asyncio.ensure_future(scoring.query_vector(q, "q", deadline))  # the query tower runs while BM25
        try:
            hits = await asyncio.wait_for(scoring.bm25(q, depth), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            encoding.cancel()
            raise ApiError(504, "q", f"BM25 did not answer within {config.timeout_s} s") from None
        except BaseException:
            encoding.cancel()
            raise
        bm25_ms = 1000 * (time.perf_counter() - started)
        q_vector = await encoding
        if not hits:
            return JSONResponse({"query": q, "hits": [], "ms": {"bm25": round(bm25_ms, 2)}, "meta": {"depth": 0}})
        docnos = [d for d, _, _ in hits]
        store = service.snapshot()
        reranking = time.perf_counter()  # BM25's hits: by id where the store has it, else by text, else encoded
        logits, passages = await scoring.score(q_vector, docnos, [t for _, _, t in hits], "hits", deadline, store,
                                               strict=False)
        rerank_ms = 1000 * (time.perf_counter() - reranking)
        scores = service.fused(logits, [s for _, s, _ in hits])
        ranked = best_first(scores, docnos)[:k]
        out = [{"rank": r + 1, "docno": docnos[i], "score": scores[i], "student_score": float(logits[i]),
                "bm25_rank": i + 1, "bm25_score": float(hits[i][1]), "text": hits[i][2]} for r, i in enumerate(ranked)]
        total = 1000 * (time.perf_counter() - started)
        return JSONResponse({"query": q, "hits": out,
                             "ms": {"bm25": round(bm25_ms, 2), "rerank": round(rerank_ms, 2),
                                    "passages": round(passages.ms, 2), "total": round(total, 2)},
                             "meta": {"by_id": passages.by_id, "by_hash": passages.by_hash,
                                      "encoded": passages.encoded, "depth": len(hits)}})

    @app.get("/health")
    @app.head("/health", include_in_schema=False)
    async def health() -> JSONResponse:
        if not scoring.loaded:
            return JSONResponse({"status": "loading"}, 503)
        return JSONResponse(scoring.service.health())

    @app.get("/metrics", response_class=PlainTextResponse,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    @app.head("/metrics", include_in_schema=False)
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


def _endpoint(request: Request) -> str:
    """The route template, never the raw path: unknown paths share one label (a scan cannot grow the scrape)."""
    return getattr(request.scope.get("route"), "path", None) or "unmatched"
