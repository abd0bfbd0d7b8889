"""Request and response bodies, one pydantic model per route: Cohere's rerank shape, TEI's, and ``/search``'s.

Cohere (``POST /v1/rerank`` and ``POST /v2/rerank``) and text-embeddings-inference (``POST /rerank``) are what
Elasticsearch's ``custom`` inference service, OpenSearch's ml-commons connectors and most clients speak; the extra
fields these models accept beyond the two APIs (``raw_scores`` for Cohere) are marked.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DocumentObject(BaseModel):
    """A document as an object: its ``text``, or the ``id`` of a passage in the embedding store, or both (the id
    is looked up first)."""

    model_config = ConfigDict(extra="allow")

    text: str | None = None
    id: str | None = None


MAX_TOKENS_HELP = ("Passages longer than this many tokens are cut to it before they are scored (a text the store "
                   "holds whole is then matched by hash only if it is that short); stored vectors named by id were "
                   "encoded at the model's passage length.")


class CohereRerankRequest(BaseModel):
    """Cohere's v1 rerank body."""

    model_config = ConfigDict(extra="allow")

    query: str
    documents: list[str | DocumentObject]
    top_n: int | None = None
    return_documents: bool = False
    model: str | None = None
    rank_fields: list[str] | None = Field(None, description="The document fields ranked, their values joined by a "
                                                            "space (default: text); a field a document lacks is a 422.")
    max_tokens_per_doc: int | None = Field(None, description=MAX_TOKENS_HELP)
    raw_scores: bool = Field(False, description="Extension: relevance_score is the raw logit, not its sigmoid.")


class CohereV2RerankRequest(BaseModel):
    """Cohere's v2 rerank body (``cohere.ClientV2.rerank``, LangChain's ``CohereRerank``, Haystack's
    ``CohereRanker``): documents are strings; results carry no document."""

    model_config = ConfigDict(extra="allow")

    query: str
    documents: list[str]
    top_n: int | None = None
    model: str | None = None
    max_tokens_per_doc: int | None = Field(None, description=MAX_TOKENS_HELP)
    raw_scores: bool = Field(False, description="Extension: relevance_score is the raw logit, not its sigmoid.")


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: dict | None = None


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereResult]
    meta: dict


class CohereV2Result(BaseModel):
    index: int
    relevance_score: float


class CohereV2RerankResponse(BaseModel):
    id: str
    results: list[CohereV2Result]
    meta: dict


class TeiRerankRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = Field(False, description="Accepted; passages are always read at the model's passage length, "
                                              "as the store was built.")


class TeiResult(BaseModel):
    index: int
    score: float
    text: str | None = None


class ErrorDetail(BaseModel):
    status: int
    field: str
    reason: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error, on every route: :mod:`ranker.serve.errors`."""

    error: ErrorDetail


REQUESTS = {"/v1/rerank": CohereRerankRequest, "/v2/rerank": CohereV2RerankRequest, "/rerank": TeiRerankRequest}
"""The body model of each POST route: parsed by :func:`ranker.serve.errors.parse_body` (bytes, UTF-8, JSON, then
the model, each failure in the one error shape) and documented in ``/openapi.json`` by :func:`openapi_bodies`."""


STATUSES = {
    "400": "the body is not UTF-8 JSON, or is nested too deeply to parse",
    "404": "a document id the embedding store lacks",
    "408": "the body did not arrive in time (a stall, too slow, or over the body timeout)",
    "409": "the server was started without --index",
    "413": "over a hard limit: body bytes, JSON values, documents, text or query length, query words, texts to encode",
    "422": "a field with a wrong value",
    "500": "a fault of the server (its log names the request id)",
    "503": "the query queue or the connection slots are full (Retry-After)",
    "504": "not answered within --timeout",
}
"""What each error status means, as ``/openapi.json`` documents it (:mod:`ranker.serve.errors`)."""
ROUTE_STATUSES = {"/v1/rerank": ("400", "404", "408", "413", "422", "500", "503", "504"),
                  "/v2/rerank": ("400", "408", "413", "422", "500", "503", "504"),
                  "/rerank": ("400", "408", "413", "422", "500", "503", "504"),
                  "/search": ("409", "413", "422", "500", "503", "504")}


def openapi_bodies(schema: dict) -> dict:
    """``schema`` (FastAPI's OpenAPI document) with each route of :data:`REQUESTS` given its request body, and each
    route of :data:`ROUTE_STATUSES` the error statuses it answers in the one shape (in place of FastAPI's own 422
    shape, which this server never sends); the models under ``components/schemas``."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for model in (*REQUESTS.values(), ErrorResponse):
        found = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(found.pop("$defs", {}))
        components[model.__name__] = found
    for path, model in REQUESTS.items():
        schema["paths"][path]["post"]["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    for path, statuses in ROUTE_STATUSES.items():
        for operation in schema["paths"][path].values():
            operation["responses"] = {**{s: r for s, r in operation.get("responses", {}).items()
                                         if s.startswith("2")},
                                      **{s: {"description": STATUSES[s], "content": {"application/json": {
                                          "schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
                                         for s in statuses}}
    return schema


class SearchHit(BaseModel):
    rank: int
    docno: str
    score: float
    student_score: float
    bm25_rank: int
    bm25_score: float
    text: str


class SearchResponse(BaseModel):
    query: str
    hits: list[SearchHit]
    ms: dict[str, float]
    meta: dict
