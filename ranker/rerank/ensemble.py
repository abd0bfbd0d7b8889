"""The ensemble reranker: components' scores fused (:mod:`ranker.fusion`: per-query z-scores, weighted).

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

from collections.abc import Mapping, Sequence
from pathlib import Path

from ranker.errors import RankerError
from ranker.fusion import check_weights, fuse
from ranker.io.artifact import ArtifactError, read_metadata
from ranker.pipeline import Reranker
from ranker.types import Query, Ranking


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
