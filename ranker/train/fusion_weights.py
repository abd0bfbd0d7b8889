"""Fusion weights learned on validation queries: a grid over the simplex, the best by a measure.

The result is an ensemble description (:mod:`ranker.rerank.ensemble`) that ``--reranker ensemble`` and
``rank fuse`` read; or, for a student fused with BM25 (:mod:`ranker.rerank.fused`), the student's weight picked
on the mean over validation sets from several domains and recorded in the model's ``ranker.json``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ranker.errors import RankerError
from ranker.fusion import fuse, interpolate
from ranker.io.artifact import update_metadata
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


@dataclass(frozen=True)
class Domain:
    """One validation set for the student-BM25 fusion: the student's ranking, BM25's scores for the same queries
    (:func:`ranker.fusion.interpolate` fills documents one lacks), and the judgements."""

    student: Ranking
    bm25: Ranking
    qrels: Sequence[Qrel]


def fusion_curve(domains: Mapping[str, Domain], step: float = 0.05,
                 measure: str = "nDCG@10") -> dict[float, dict[str, float]]:
    """For each student weight on a grid of ``step`` over [0, 1]: ``measure`` on each domain and their ``mean``."""
    curve = {}
    for w in np.round(np.arange(0, 1 + step / 2, step), 10):
        scores = {name: round(mean_score(d.qrels, interpolate(d.bm25, d.student, float(w)), measure), 4)
                  for name, d in domains.items()}
        curve[float(w)] = {**scores, "mean": round(float(np.mean(list(scores.values()))), 4)}
    return curve


def pick_student_weight(domains: Mapping[str, Domain], step: float = 0.05,
                        measure: str = "nDCG@10") -> tuple[float, dict[float, dict[str, float]]]:
    """The student weight with the best mean ``measure`` over the domains (validation sets from different
    collections: never one alone), ties to the larger weight, and the whole curve."""
    curve = fusion_curve(domains, step, measure)
    best = max(curve, key=lambda w: (curve[w]["mean"], w))
    return best, curve


def record_fusion(model: str | Path, weight: float, curve: Mapping[float, Mapping[str, float]], measure: str,
                  sources: Mapping[str, str]) -> None:
    """Write the picked weight into a student folder's ``ranker.json`` (``fusion``), with the validation curve
    that picked it and the runs it was computed from: what :func:`ranker.rerank.fused.model_weight` reads."""
    update_metadata(model, "twinbert", fusion={
        "kind": "bm25", "student_weight": weight, "measure": measure,
        "validation": {str(w): dict(v) for w, v in curve.items()}, "runs": dict(sources)})


def pick_student(curves: Mapping[str, Mapping[float, Mapping[str, float]]], start: str) -> tuple[str, dict]:
    """The default student among candidates, each given by its :func:`fusion_curve`: the best mean at its own best
    weight, among those not below the zero-shot ``start`` (also a key) on any validation set at their best weights;
    with each candidate's best weight, scores and whether it was eligible.

    Raises:
        RankerError: ``start`` is not among the curves.
    """
    if start not in curves:
        raise RankerError(f"the zero-shot start {start!r} is not among the candidates: {', '.join(curves)}")
    best = {name: max(curve.items(), key=lambda wc: (wc[1]["mean"], wc[0])) for name, curve in curves.items()}
    floor = best[start][1]
    table = {name: {"weight": w, **scores, "eligible": all(scores[k] >= floor[k] for k in floor)}
             for name, (w, scores) in best.items()}
    pick = max((n for n in table if table[n]["eligible"]), key=lambda n: table[n]["mean"])
    return pick, table
