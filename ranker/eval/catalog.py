"""The shipped models as a table: what each is for, its kind and size, and its figures from the committed runs."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ranker.eval.evaluate import evaluate
from ranker.io.artifact import artifact_type
from ranker.io.formats import read_qrels, read_run
from ranker.measures import parse_measures
from ranker.models.loading import DEFAULT_MODELS

CATALOG = "catalog.toml"
QRELS = {"dl19": ("msmarco-passage/qrels/dl19.txt", 2), "scifact": ("beir-scifact/qrels/test.tsv", None)}
"""Where each collection's judgements are in the shared data, and the relevance level nDCG counts from."""


@dataclass
class ModelEntry:
    name: str
    kind: str
    purpose: str
    encode: str
    size_mb: float
    default: bool
    ndcg10: dict[str, float | None] = field(default_factory=dict)


def catalog(models: Path, root: Path, data: Path) -> list[ModelEntry]:
    """Every model ``models/catalog.toml`` describes, with nDCG@10 of its runs (paths relative to ``root``; a run
    or qrels file that is not there gives ``None``)."""
    described = tomllib.loads((models / CATALOG).read_text())
    entries = []
    for name, about in described.items():
        path = models / name
        kind = artifact_type(path)
        files = [path] if path.is_file() else [f for f in path.rglob("*") if "onnx" not in f.relative_to(path).parts]
        size = sum(f.stat().st_size for f in files if f.is_file())  # not the exported query graphs cached beside it
        figures = {collection: _ndcg10(root / run, data, collection) for collection, run in about["runs"].items()}
        entries.append(ModelEntry(name, kind, about["purpose"], about["encode"], size / 1e6,
                                  DEFAULT_MODELS.get(kind) == name, figures))
    return entries


def _ndcg10(run: Path, data: Path, collection: str) -> float | None:
    qrels_file, rel_level = QRELS[collection]
    if not run.is_file() or not (data / qrels_file).is_file():
        return None
    found = evaluate(read_qrels(data / qrels_file), {"run": read_run(run)}, parse_measures(["nDCG@10"], rel_level))
    return float(found.means.iloc[0, 0])
