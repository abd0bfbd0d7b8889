"""The embedding store: passage vectors computed once, offline, and looked up per query.

Layer: above ``ranker.io`` (files, artifacts), below the first stages and rerankers, which hold a store and the
model that built it; a store never imports a model. Modules: ``embeddings`` (:class:`EmbeddingStore`, opened
read-only at its last commit, memory-mapped), ``keys`` (its sorted docno and text-hash indexes), ``quantization``
(float16 / int8 codes), ``build`` (resumable builds, shards, merges, re-quantizing), ``edit`` (add, delete,
compact, each one commit), ``distributed`` (a build on Ray).
"""
from __future__ import annotations

from ranker.store.build import build_store, convert_store, merge_stores
from ranker.store.edit import add_to_store, compact_store, delete_from_store
from ranker.store.embeddings import DocEncoder, EmbeddingStore, StoreMismatchError

__all__ = ["DocEncoder", "EmbeddingStore", "StoreMismatchError", "add_to_store", "build_store", "compact_store",
           "convert_store", "delete_from_store", "merge_stores"]
