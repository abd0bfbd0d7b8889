"""The cross-encoder (the teacher) as a reranker: one forward pass per query-passage pair."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from ranker.models.cross_encoder import CrossEncoder
from ranker.pipeline import Reranker, pending, rescored
from ranker.types import Query, Ranking


class CrossEncoderReranker(Reranker):
    """Rerank candidates by cross-encoder logit.

    Args:
        texts: ``docno -> passage text`` for every candidate.
        model: A :class:`CrossEncoder`, or a folder/name for :meth:`CrossEncoder.from_pretrained`.
        batch_size: Pairs per forward pass.
        progress: Show a tqdm bar.
    """

    name = "cross-encoder"

    def __init__(self, texts: Mapping[str, str], model: CrossEncoder | str | Path, batch_size: int = 32,
                 progress: bool = True):
        self.texts, self.batch_size, self.progress = texts, batch_size, progress
        self.model = model if isinstance(model, CrossEncoder) else CrossEncoder.from_pretrained(model)

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        docs = pending(queries, candidates)
        pairs = [(queries[d.qid].text, self.texts[d.docno]) for d in docs]
        scores = self.model.score_pairs(pairs, self.batch_size, self.progress)
        return rescored(docs, scores)

    def config(self) -> dict:
        return {"stage": self.name, **dataclasses.asdict(self.model.config)}
