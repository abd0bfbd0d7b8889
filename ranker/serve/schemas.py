"""Request and response bodies, one pydantic model per route: Cohere's rerank shape, TEI's, and ``/search``'s.

Cohere (``POST /v1/rerank``) and text-embeddings-inference (``POST /rerank``) are what Elasticsearch's ``custom``
inference service, OpenSearch's ml-commons connectors and most clients speak; the extra fields these models
accept beyond the two APIs (``raw_scores`` for Cohere) are marked.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DocumentObject(BaseModel):
    """A document as an object: its ``text``, or the ``id`` of a passage in the embedding store, or both (the id
    is looked up first)."""

    model_config = ConfigDict(extra="allow")

    text: str | None = None
    id: str | None = None


class CohereRerankRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    query: str
    documents: list[str | DocumentObject]
    top_n: int | None = None
    return_documents: bool = False
    model: str | None = None
    raw_scores: bool = Field(False, description="Extension: relevance_score is the raw logit, not its sigmoid.")


class CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: dict | None = None


class CohereRerankResponse(BaseModel):
    id: str
    results: list[CohereResult]
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


class SearchHit(BaseModel):
    rank: int
    docno: str
    score: float
    bm25_rank: int
    bm25_score: float
    text: str


class SearchResponse(BaseModel):
    query: str
    hits: list[SearchHit]
    ms: dict[str, float]
    meta: dict
