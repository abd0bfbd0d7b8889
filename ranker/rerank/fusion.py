"""Score fusion: per-query z-normalised scores, weighted.

The ensemble reranker scores the candidates with each of its components (the candidates' own first-stage
scores count as the ``identity`` component), normalises each per query, and sums them with the weights.
An ensemble is an artifact of one JSON file (:mod:`ranker.io.artifact`, type ``ensemble``; ``rank ensemble``
writes one with the weights :mod:`ranker.train.fusion_weights` picks on validation runs)::

    {"type": "ensemble", "format_version": 1,
     "components": [{"reranker": "cross-encoder", "model": "teacher"}, {"reranker": "biencoder"},
                    {"reranker": "identity"}],
     "weights": [0.75, 0.10, 0.15], "validation": {...}}

A relative ``model`` path is taken from the JSON file's folder (so ``models/ensemble.json`` names ``teacher``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ranker.errors import RankerError
from ranker.io.artifact import ArtifactError, read_metadata
from ranker.pipeline import Reranker
from ranker.types import Query, Ranking, ScoredDoc


def znorm(ranking: Ranking) -> dict[str, dict[str, float]]:
    """Each query's scores as z-scores (mean 0, standard deviation 1), by docno."""
    out = {}
    for qid, docs in ranking.items():
        s = np.array([d.score for d in docs], dtype=np.float64)
        s = (s - s.mean()) / (s.std() + 1e-9)
        out[qid] = {d.docno: float(v) for d, v in zip(docs, s)}
    return out


MAX_WEIGHT = 1e6
"""The largest weight magnitude accepted: z-scores are a few units, so anything larger is a typo (and large enough
ones overflow the fused score to ``inf``)."""


def check_weights(weights: Sequence[object]) -> list[float]:
    """``weights`` as floats, or a :class:`RankerError` naming the first that is not a finite number within
    ±:data:`MAX_WEIGHT` (NaN, Infinity, a string, a bool)."""
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or abs(w) > MAX_WEIGHT:
            raise RankerError(f"weight {i + 1} is {w!r}: weights must be finite numbers within ±{MAX_WEIGHT:g}")
    return [float(w) for w in weights]


def fuse(rankings: Sequence[Ranking], weights: Sequence[float], names: Sequence[str] | None = None) -> Ranking:
    """Weighted sum of z-normalised scores over the documents of the first ranking.

    Raises:
        RankerError: A ranking lacks a query or a document of the first (they must score the same candidates);
            ``names`` (default: their positions) name the rankings in the message.
    """
    if len(rankings) != len(weights):
        raise RankerError(f"{len(rankings)} rankings but {len(weights)} weights")
    weights = check_weights(weights)
    names = list(names or [f"ranking {i + 1}" for i in range(len(rankings))])
    for name, other in zip(names[1:], rankings[1:]):
        for qid, docs in rankings[0].items():
            missing = {d.docno for d in docs} - {d.docno for d in other.get(qid, [])}
            if missing:
                raise RankerError(f"{name} does not score the candidates of {names[0]}: query {qid!r} lacks "
                                  f"{len(missing)} of them ({', '.join(sorted(missing)[:3])}…); fuse runs over "
                                  "the same candidates")
    normed = [znorm(r) for r in rankings]
    return {qid: [ScoredDoc(qid, d.docno, sum(w * n[qid][d.docno] for w, n in zip(weights, normed)))
                  for d in docs] for qid, docs in rankings[0].items()}


class EnsembleReranker(Reranker):
    """Rerank by fused, z-normalised scores of several rerankers."""

    name = "ensemble"

    def __init__(self, components: Sequence[Reranker], weights: Sequence[float], description: Mapping | None = None):
        if len(components) != len(weights):
            raise RankerError(f"{len(components)} components but {len(weights)} weights")
        check_weights(weights)
        self.components, self.weights, self.description = list(components), list(weights), description or {}

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        """The fused ranking; a component of weight 0 is not run (it cannot change a score)."""
        used = [(c, w) for c, w in zip(self.components, self.weights) if w != 0]
        return fuse([c.rerank(queries, candidates) for c, _ in used], [w for _, w in used])

    def config(self) -> dict:
        return {"stage": self.name, "weights": self.weights, "components": [c.config() for c in self.components],
                **self.description}


def read_ensemble(path: str | Path) -> dict:
    """An ensemble description (``components`` and ``weights``), or a one-line error naming the file."""
    path = Path(path)
    try:
        spec = read_metadata(path, "ensemble")
    except ArtifactError as e:
        raise RankerError(f"not an ensemble description: {e}") from None
    try:
        if len(spec["components"]) != len(spec["weights"]):
            raise ValueError(f"{len(spec['components'])} components but {len(spec['weights'])} weights")
        check_weights(spec["weights"])
        return spec
    except RankerError as e:
        raise RankerError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise RankerError(f"{path}: not an ensemble description ({e})") from None


def load_ensemble(path: str | Path, make) -> EnsembleReranker:
    """An :class:`EnsembleReranker` from its JSON file; ``make(name, model)`` builds each component."""
    path = Path(path)
    spec = read_ensemble(path)

    def located(model: str | None) -> str | None:
        return str(path.parent / model) if model and (path.parent / model).exists() else model

    try:
        components = [make(c["reranker"], located(c.get("model"))) for c in spec["components"]]
    except (KeyError, TypeError) as e:
        raise RankerError(f"{path}: not an ensemble description ({e})") from None
    return EnsembleReranker(components, spec["weights"], {"ensemble": str(path)})
