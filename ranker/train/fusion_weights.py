"""Fusion weights learned on validation queries: a grid over the simplex, the best by a measure.

The result is an ensemble description (:mod:`ranker.rerank.ensemble`) that ``--reranker ensemble`` and
``rank fuse`` read.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from ranker.fusion import fuse
from ranker.measures import parse_measures, per_query
from ranker.types import Qrel, Ranking


def mean_score(qrels: Sequence[Qrel], ranking: Ranking, measure: str) -> float:
    """The mean of ``measure`` over the queries, as :func:`ranker.eval.evaluate.evaluate` reports it."""
    return float(per_query(qrels, ranking, parse_measures([measure]))[measure].mean())


def pick_weights(rankings: Sequence[Ranking], qrels: Sequence[Qrel], step: float = 0.05,
                 measure: str = "nDCG@10") -> tuple[tuple[float, ...], float]:
    """The weights on a simplex grid (``step``) that maximise ``measure``; ties go to the earliest grid point."""
    grid = np.round(np.arange(0, 1 + step / 2, step), 10)
    best: tuple[tuple[float, ...], float] | None = None
    for rest in itertools.product(grid, repeat=len(rankings) - 1):
        if sum(rest) > 1 + 1e-9:
            continue
        weights = (float(round(1 - sum(rest), 10)), *map(float, rest))
        score = mean_score(qrels, fuse(rankings, weights), measure)
        if best is None or score > best[1] + 1e-12:
            best = (weights, score)
    assert best is not None
    return best


def ensemble_spec(components: Sequence[str], rankings: Sequence[Ranking], qrels: Sequence[Qrel],
                  step: float = 0.05, measure: str = "nDCG@10") -> dict:
    """An ensemble description (write it with :func:`ranker.io.artifact.write_metadata`): ``components``
    (``NAME`` or ``NAME=MODEL``, one per ranking of the same validation queries) with the weights
    :func:`pick_weights` finds on ``qrels``."""
    weights, score = pick_weights(rankings, qrels, step, measure)
    alone = [mean_score(qrels, r, measure) for r in rankings]
    parsed = [dict(zip(("reranker", "model"), c.split("=", 1))) for c in components]
    return {"components": parsed, "weights": list(weights),
            "validation": {"measure": measure, "fused": round(score, 4), "grid_step": step,
                           "components": [round(float(v), 4) for v in alone], "queries": len(rankings[0])}}
