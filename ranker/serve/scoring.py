"""What every rerank route does with a request, in steps: check the documents, get the query vector (batched with
other requests'), find or encode the passage vectors within the request's time, cross, and order the results.

:class:`Scoring` holds the running service, its one model thread and the query batcher (:func:`create_app`'s
lifespan starts them); the routes in :mod:`ranker.serve.app` only adapt request and response shapes to it.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ranker.serve.batcher import QueryBatcher, QueueFull
from ranker.serve.config import ServeConfig
from ranker.serve.errors import ApiError, parse_body
from ranker.serve.metrics import Metrics
from ranker.serve.schemas import CohereRerankRequest, CohereV2RerankRequest, DocumentObject
from ranker.serve.service import Passages, RerankService
from ranker.store.embeddings import EmbeddingStore
from ranker.types import best_first


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def ranked_texts(docs: list[DocumentObject], fields: list[str] | None) -> list[str | None]:
    """What each document is ranked on: its text, or the ``rank_fields`` values joined by a space.

    Raises:
        ApiError: 422 naming ``documents[i].FIELD`` when a document lacks a text field ``rank_fields`` names.
    """
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


WORD = re.compile(r"\w+")


class Scoring:
    """The service a server runs, its threads (model, BM25, body parsing) and query batcher, and the steps of a
    rerank request."""

    def __init__(self, config: ServeConfig, metrics: Metrics):
        self.config, self.metrics = config, metrics
        self.service: RerankService | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.lexical: ThreadPoolExecutor | None = None
        self.parser: ThreadPoolExecutor | None = None
        self.batcher: QueryBatcher | None = None

    def start(self, service: RerankService | None) -> None:
        """Load the service (unless one is given), start the threads and the batcher."""
        config = self.config
        self.service = service or RerankService(config)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ranker-model")
        self.lexical = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ranker-bm25")
        self.parser = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ranker-parse")
        self.batcher = QueryBatcher(self._encode_queries, self.executor, config.max_batch,
                                    config.max_wait_ms, config.max_queue, self.metrics.batch.observe)
        self.batcher.start()

    def _encode_queries(self, texts: list[str]) -> np.ndarray:
        vectors, cut = self.service.encode_queries(texts)
        self.metrics.queries_truncated.inc(cut)
        return vectors

    async def stop(self) -> None:
        await self.batcher.stop()
        for executor in (self.executor, self.lexical, self.parser):
            executor.shutdown(wait=False, cancel_futures=True)

    @property
    def loaded(self) -> bool:
        return self.service is not None

    async def on_model_thread(self, function, *args):
        """``function(*args)`` on the one model thread (model work never runs on the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def parse(self, raw: bytes, model: type[BaseModel]) -> Any:
        """The body as ``model`` (:func:`ranker.serve.errors.parse_body`), parsed on its own thread, never on the
        event loop or the model thread."""
        return await asyncio.get_running_loop().run_in_executor(self.parser, parse_body, raw, model)

    async def bm25(self, query: str, depth: int) -> list[tuple[str, float, str]]:
        """BM25's top ``depth`` (:meth:`RerankService.bm25`) on the BM25 thread: lexical work never waits for
        the model's, nor the model's for it."""
        return await asyncio.get_running_loop().run_in_executor(self.lexical, self.service.bm25, query, depth)

    def check_query(self, text: str, field: str, words: bool = False) -> None:
        """Refuse a query with nothing the query tower reads (422), over the length limit, or (``words``: before
        BM25) over the word limit (413)."""
        config = self.config
        if not text.strip():
            raise ApiError(422, field, "empty: a query needs some text")
        if len(text) > config.max_query_chars:
            raise ApiError(413, field, f"{len(text)} characters, more than the limit {config.max_query_chars}")
        if words and (count := len(WORD.findall(text))) > config.max_query_terms:
            raise ApiError(413, field, f"{count} words, more than the limit {config.max_query_terms}")
        if not self.service.reads_tokens(text):
            raise ApiError(422, field, "no text the query tower reads (only control characters, marks or the like)")

    async def query_vector(self, text: str, field: str, deadline: float) -> np.ndarray:
        """The query's vector, from a forward pass shared with the queries waiting beside it."""
        config = self.config
        self.check_query(text, field)
        try:
            return await self.batcher.submit(text, max(0.001, deadline - time.monotonic()))
        except QueueFull:
            raise ApiError(503, "query", f"{config.max_queue} queries are waiting: retry shortly",
                           {"Retry-After": "1"}) from None
        except TimeoutError:
            raise ApiError(504, "query", f"not answered within {config.timeout_s} s") from None

    def check_documents(self, ids: list[str | None], texts: list[str | None], field: str) -> None:
        """Refuse an empty request, too many documents, or a text over the size limit (413 naming it)."""
        config = self.config
        if not ids:
            raise ApiError(422, field, "empty: nothing to rerank")
        if len(ids) > config.max_documents:
            raise ApiError(413, field, f"{len(ids)} documents, more than the limit {config.max_documents}")
        for i, text in enumerate(texts):
            if text is not None and len(text) > config.max_text_chars:
                raise ApiError(413, f"{field}[{i}]", f"{len(text)} characters, more than the limit "
                                                     f"{config.max_text_chars}")

    async def score(self, q: np.ndarray, ids: list[str | None], texts: list[str | None], field: str,
                    deadline: float, store: EmbeddingStore | None = None, cut_to: int | None = None,
                    strict: bool = True) -> tuple[np.ndarray, Passages]:
        """Logits of the documents against the query vector, and where their vectors came from (one commit of the
        store: ``store``, or the last); unseen texts are encoded a batch a turn on the model thread, each turn
        within what is left of the request's time. ``cut_to``: the texts were cut to this many tokens
        (``max_tokens_per_doc``). ``strict``: an id the store lacks is a 404 (else its text is looked up)."""
        config, service, metrics = self.config, self.service, self.metrics
        store = store or service.snapshot()
        try:
            rows, ids = service.locate(store, ids, texts, strict)
        except KeyError as e:
            position, docno = e.args[0]
            raise ApiError(404, f"{field}[{position}].id", f"{docno!r} is not in the embedding store") from None
        unseen = [texts[i] or "" for i, row in enumerate(rows) if row is None]
        if len(unseen) > config.max_encode:
            advice = (f"texts cut by max_tokens_per_doc={cut_to} differ from the stored passages: leave it out "
                      "to use their stored vectors" if cut_to else "add them to the store (rank encode --add)")
            raise ApiError(413, field, f"{len(unseen)} texts are not in the embedding store, more than the "
                                       f"{config.max_encode} a request may encode: {advice}")
        started, parts = time.perf_counter(), []
        for start in range(0, len(unseen), config.encode_batch):  # one batch a turn: queries interleave
            turn = self.on_model_thread(service.encode_passages, unseen[start:start + config.encode_batch])
            try:
                parts.append(await asyncio.wait_for(turn, max(0.0, deadline - time.monotonic())))
            except TimeoutError:
                raise ApiError(504, field, f"its unseen texts were not encoded within {config.timeout_s} s") from None
        passages = service.passages(store, ids, rows, np.concatenate(parts) if parts else None,
                                    1000 * (time.perf_counter() - started))
        logits = passages.best(service.cross(q, passages.vectors))  # a document's best window
        metrics.documents.labels("id").inc(passages.by_id)
        metrics.documents.labels("hash").inc(passages.by_hash)
        metrics.documents.labels("encoded").inc(passages.encoded)
        return logits, passages

    async def rerank(self, query: str, ids: list[str | None], texts: list[str | None],
                     field: str, cut_to: int | None = None) -> tuple[np.ndarray, Passages, list[int]]:
        """Check, encode and score one request's documents within ``--timeout`` (all of its model work);
        the logits, where the vectors came from, and the documents' positions best first
        (:func:`ranker.types.best_first`: ties by id, as ``rank run`` orders them, else as given)."""
        self.check_documents(ids, texts, field)
        deadline = time.monotonic() + self.config.timeout_s
        logits, passages = await self.score(await self.query_vector(query, "query", deadline), ids, texts, field,
                                            deadline, cut_to=cut_to)
        return logits, passages, best_first(logits.tolist(), ids)

    async def cohere_results(self, body: CohereRerankRequest | CohereV2RerankRequest, docs: list[DocumentObject],
                             ids: list[str | None], texts: list[str | None], with_documents: bool) -> JSONResponse:
        """The Cohere response (v1 and v2 share it): results best first, ``top_n`` of them."""
        if body.top_n is not None and body.top_n < 1:
            raise ApiError(422, "top_n", f"must be at least 1, got {body.top_n}")
        if body.max_tokens_per_doc is not None and body.max_tokens_per_doc < 1:
            raise ApiError(422, "max_tokens_per_doc", f"must be at least 1, got {body.max_tokens_per_doc}")
        service, cap = self.service, body.max_tokens_per_doc
        cutting = cap is not None and cap < service.passage_tokens - 2  # else the model reads no more anyway
        if cutting:
            self.check_documents(ids, texts, "documents")  # before cutting: the limits are on what was sent
            texts = await self.on_model_thread(service.cut, texts, cap)
        logits, passages, order = await self.rerank(body.query, ids, texts, "documents", cap if cutting else None)
        shown = sigmoid(logits) if not body.raw_scores else logits.astype(np.float64)
        results = []
        for i in order[: body.top_n or len(docs)]:
            result = {"index": i, "relevance_score": float(shown[i])}
            if with_documents:
                result["document"] = {k: v for k, v in docs[i].model_dump().items() if v is not None}
            results.append(result)
        meta = {"api_version": {"version": "2"}, "billed_units": {"search_units": 1},
                "ranker": {"by_id": passages.by_id, "by_hash": passages.by_hash, "encoded": passages.encoded,
                           "score": "logit" if body.raw_scores else "sigmoid(logit)",
                           "passage_tokens": min(cap or service.passage_tokens, service.passage_tokens)}}
        return JSONResponse({"id": str(uuid.uuid4()), "results": results, "meta": meta})
