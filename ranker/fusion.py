"""Score fusion maths over rankings: per-query z-normalised scores, weighted sums, weights checked.

Used by the ensemble reranker (:mod:`ranker.rerank.ensemble`), ``rank fuse``, the fusion weights picked on
validation (:mod:`ranker.train.fusion_weights`) and the hybrid first stage (:mod:`ranker.first_stage.dense`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ranker.errors import RankerError
from ranker.types import Ranking, ScoredDoc


def znorm(ranking: Ranking) -> dict[str, dict[str, float]]:
    """Each query's scores as z-scores (mean 0, standard deviation 1), by docno."""
    out = {}
    for qid, docs in ranking.items():
        scores = np.array([d.score for d in docs], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = scores.mean(), scores.std()
        if not (np.isfinite(mean) and np.isfinite(std)):  # scores near float64's limit (±1e300) overflow the
            scores = scores / np.abs(scores).max()  # sums: the z-scores of scaled scores are the same numbers
            mean, std = scores.mean(), scores.std()
        z = (scores - mean) / (std + 1e-9)
        out[qid] = {d.docno: float(v) for d, v in zip(docs, z)}
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


def interpolate(lexical: Ranking, neural: Ranking, weight: float) -> Ranking:
    """``weight * z(neural) + (1 - weight) * z(lexical)`` over the union of each query's documents, z-scores per
    query; a document one ranking lacks gets that ranking's lowest z-score for the query.

    The one rule that fuses a student's (or dense) score with BM25's: the hybrid first stage
    (:mod:`ranker.first_stage.dense`), the fused reranker (:mod:`ranker.rerank.fused`) and ``/search``.
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise RankerError(f"the fusion weight must lie in [0, 1], got {weight!r}")
    normed = [znorm(lexical), znorm(neural)]
    out = {}
    for qid in dict.fromkeys([*lexical, *neural]):
        lists = [n.get(qid, {}) for n in normed]
        floors = [min(z.values(), default=0.0) for z in lists]
        docnos = dict.fromkeys([*lists[0], *lists[1]])
        out[qid] = [ScoredDoc(qid, d, (1 - weight) * lists[0].get(d, floors[0]) + weight * lists[1].get(d, floors[1]))
                    for d in docnos]
    return out
