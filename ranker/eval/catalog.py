"""The shipped models as a table: what each is for, its kind and size, and its figures from the committed runs."""

from __future__ import annotations

import contextlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ranker.errors import RankerError
from ranker.io.artifact import artifact_type, shipped_megabytes
from ranker.io.atomic import write_json
from ranker.io.checkpoints import cache_dir
from ranker.models.loading import DEFAULT_MODELS

CATALOG = "catalog.toml"
QRELS = {"dl19": ("msmarco-passage/qrels/dl19.txt", 2), "scifact": ("beir-scifact/qrels/test.tsv", None)}
"""Where each collection's judgements are in the shared data, and the relevance level nDCG counts from."""


STATUSES = ("default", "supported", "experiment")
"""A shipped model's label, in the order ``rank models list`` shows them: the default of its kind
(:data:`ranker.models.loading.DEFAULT_MODELS`, never written in the catalogue), one a user may pick or a default
or reproduction needs, or a result kept for the record."""


@dataclass
class ModelEntry:
    name: str
    kind: str
    purpose: str
    encode: str
    size_mb: float
    status: str
    decided_by: str
    ndcg10: dict[str, float | None] = field(default_factory=dict)

    @property
    def default(self) -> bool:
        return self.status == "default"


def catalog(models: Path, root: Path, data: Path) -> list[ModelEntry]:
    """Every model ``models/catalog.toml`` describes, defaults first, then supported models, then experiments
    (:data:`STATUSES`), with nDCG@10 of its runs (paths relative to ``root``; a run or qrels file that is not there
    gives ``None``). Figures are cached by the run's and qrels' size and time (:data:`FIGURES`), so listing again
    costs no evaluation.

    Raises:
        RankerError: ``catalog.toml`` is not TOML, an entry lacks a field, has a status other than ``supported`` or
            ``experiment``, or a default is not catalogued.
    """
    file = models / CATALOG
    try:
        described = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RankerError(f"{file}: not a TOML catalogue ({e})") from None
    cache = _FigureCache(cache_dir() / FIGURES)
    entries = []
    for name, about in described.items():
        path = models / name
        try:
            kind = artifact_type(path)
            runs, purpose, encode = about["runs"], about["purpose"], about["encode"]
            status, decided_by = about["status"], about["decided_by"]
        except (KeyError, TypeError) as e:
            raise RankerError(f"{file}: [{name}] lacks {e}") from None
        if status not in STATUSES[1:]:
            raise RankerError(f"{file}: [{name}] status {status!r} is not one of {', '.join(STATUSES[1:])} (a "
                              "default is DEFAULT_MODELS' to say)")
        figures = {collection: cache.ndcg10(root / run, data, collection) for collection, run in runs.items()}
        default = DEFAULT_MODELS.get(kind) == name
        if default and status == "experiment":
            raise RankerError(f"{file}: [{name}] is the default {kind} (DEFAULT_MODELS) but marked an experiment")
        entries.append(ModelEntry(name, kind, purpose, encode, shipped_megabytes(path),
                                  "default" if default else status, decided_by, figures))
    cache.save()
    if missing := sorted(set(DEFAULT_MODELS.values()) - {e.name for e in entries}):
        raise RankerError(f"{file}: the default {', '.join(missing)} is not catalogued")
    return sorted(entries, key=lambda e: STATUSES.index(e.status))


FIGURES = "catalog-figures.json"
"""The cache of the catalogue's figures, in :func:`ranker.io.checkpoints.cache_dir`."""


class _FigureCache:
    """nDCG@10 of a run on a collection's qrels, keyed by both files' paths, sizes and modification times."""

    def __init__(self, path: Path):
        self.path, self.changed = path, False
        try:
            self.known = json.loads(path.read_text())
        except (OSError, ValueError):
            self.known = {}

    def ndcg10(self, run: Path, data: Path, collection: str) -> float | None:
        qrels_file, rel_level = QRELS[collection]
        qrels = data / qrels_file
        if not run.is_file() or not qrels.is_file():
            return None
        key = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (run, qrels))
        if key not in self.known:  # pandas, scipy and ir-measures load only to compute a figure anew
            from ranker.eval.evaluate import evaluate
            from ranker.io.formats import read_qrels, read_run
            from ranker.measures import parse_measures

            found = evaluate(read_qrels(qrels), {"run": read_run(run)}, parse_measures(["nDCG@10"], rel_level))
            self.known[key], self.changed = float(found.means.iloc[0, 0]), True
        return self.known[key]

    def save(self) -> None:
        if self.changed:
            with contextlib.suppress(OSError):  # a read-only cache: the figures are computed again next time
                write_json(self.path, self.known)
