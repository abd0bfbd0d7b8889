"""Score fusion: per-query z-normalised scores, weighted; weights picked on validation queries.

The ensemble reranker scores the candidates with each of its components (the candidates' own first-stage
scores count as the ``identity`` component), normalises each per query, and sums them with the weights.
An ensemble is described by a small JSON file (``rank ensemble`` writes one from validation runs)::

    {"components": [{"reranker": "teacher", "model": "teacher"}, {"reranker": "biencoder"},
                    {"reranker": "identity"}],
     "weights": [0.75, 0.10, 0.15], "validation": {...}}

A relative ``model`` path is taken from the JSON file's folder (so ``models/ensemble.json`` names ``teacher``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import RankerError
from .pipeline import Reranker
from .types import Qrel, Query, Ranking, ScoredDoc


def znorm(ranking: Ranking) -> dict[str, dict[str, float]]:
    """Each query's scores as z-scores (mean 0, standard deviation 1), by docno."""
    out = {}
    for qid, docs in ranking.items():
        s = np.array([d.score for d in docs], dtype=np.float64)
        s = (s - s.mean()) / (s.std() + 1e-9)
        out[qid] = {d.docno: float(v) for d, v in zip(docs, s)}
    return out


def fuse(rankings: Sequence[Ranking], weights: Sequence[float]) -> Ranking:
    """Weighted sum of z-normalised scores over the documents of the first ranking."""
    if len(rankings) != len(weights):
        raise RankerError(f"{len(rankings)} rankings but {len(weights)} weights")
    normed = [znorm(r) for r in rankings]
    return {qid: [ScoredDoc(qid, d.docno, sum(w * n[qid][d.docno] for w, n in zip(weights, normed)))
                  for d in docs] for qid, docs in rankings[0].items()}


def pick_weights(rankings: Sequence[Ranking], qrels: Sequence[Qrel], step: float = 0.05,
                 measure: str = "nDCG@10") -> tuple[tuple[float, ...], float]:
    """The weights on a simplex grid (``step``) that maximise ``measure``; ties go to the earliest grid point."""
    from .evaluate import evaluate, parse_measures

    measures = parse_measures([measure])
    grid = np.round(np.arange(0, 1 + step / 2, step), 10)
    best: tuple[tuple[float, ...], float] | None = None
    for rest in itertools.product(grid, repeat=len(rankings) - 1):
        if sum(rest) > 1 + 1e-9:
            continue
        weights = (float(round(1 - sum(rest), 10)), *map(float, rest))
        score = float(evaluate(qrels, {"f": fuse(rankings, weights)}, measures).means.iloc[0, 0])
        if best is None or score > best[1] + 1e-12:
            best = (weights, score)
    assert best is not None
    return best


class EnsembleReranker(Reranker):
    """Rerank by fused, z-normalised scores of several rerankers."""

    name = "ensemble"

    def __init__(self, components: Sequence[Reranker], weights: Sequence[float], description: Mapping | None = None):
        if len(components) != len(weights):
            raise RankerError(f"{len(components)} components but {len(weights)} weights")
        self.components, self.weights, self.description = list(components), list(weights), description or {}

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        return fuse([c.rerank(queries, candidates) for c in self.components], self.weights)

    def config(self) -> dict:
        return {"stage": self.name, "weights": self.weights, "components": [c.config() for c in self.components],
                **self.description}


def ensemble_spec(components: Sequence[str], rankings: Sequence[Ranking], qrels: Sequence[Qrel],
                  step: float = 0.05, measure: str = "nDCG@10") -> dict:
    """An ensemble description: ``components`` (``NAME`` or ``NAME=MODEL``, one per ranking of the same
    validation queries) with the weights :func:`pick_weights` finds on ``qrels``."""
    from .evaluate import evaluate, parse_measures

    weights, score = pick_weights(rankings, qrels, step, measure)
    alone = evaluate(qrels, {str(i): r for i, r in enumerate(rankings)}, parse_measures([measure])).means.iloc[:, 0]
    parsed = [dict(zip(("reranker", "model"), c.split("=", 1))) for c in components]
    return {"components": parsed, "weights": list(weights),
            "validation": {"measure": measure, "fused": round(score, 4), "grid_step": step,
                           "components": [round(float(v), 4) for v in alone], "queries": len(rankings[0])}}


def read_ensemble(path: str | Path) -> dict:
    """An ensemble description (``components`` and ``weights``), or a one-line error naming the file."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
        if len(spec["components"]) != len(spec["weights"]):
            raise ValueError(f"{len(spec['components'])} components but {len(spec['weights'])} weights")
        return spec
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
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
