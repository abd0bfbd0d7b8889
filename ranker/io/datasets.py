"""The dataset registry: every training and test set of the shared data, declared once.

After ir_datasets' ``registry.register``: a :class:`Dataset` names its files (topics, judgements, passages,
first-stage run), how its grades map to the TREC DL 0–3 scale, the prefix its ids carry, what distillation
scores for it and whether part of it is held out for validation; :func:`load` binds one to a data folder and
its methods read it. Trainers, the CLI and the scripts name sets by these keys and nothing else.

Paths are templates: ``{data}`` is the shared data folder (``../shared/data``, see its README), ``{runs}`` the
project's own run folder (``runs/``: BM25 over SciFact, made by ``scripts/reproduce.sh``).

**Grades.** DL20, DL21, DL23: the qrels grade as is. dev600: the human grade ``h`` (0–4, where judged) maps to
``{0: 0, 1: 1, 2: 2, 3: 3, 4: 3}``; the official MS MARCO positive is raised to at least 2, so it is always a
positive. SciFact's binary judgements: 1 -> 2. Relevant means grade >= 2 (:data:`POSITIVE_GRADE`).

**Ids.** SciFact's query and document ids are numbers, like MS MARCO's: they get the prefix ``scifact:`` so
that both collections can share one training run. :func:`collection_of` tells them apart.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ranker.errors import RankerError
from ranker.io.formats import read_qrels, read_run, read_topics
from ranker.io.texts import TextSource
from ranker.types import Qrel, Query, Ranking, ScoredDoc

DATA_DIR = Path("../shared/data")
"""The shared data folder, relative to the project root."""
RUNS_DIR = Path("runs")
"""The project's own runs, relative to the project root."""
POSITIVE_GRADE = 2
"""The lowest grade counted relevant (TREC DL's convention for RR, R and MAP)."""

Use = Literal["teacher", "distill", "align", "validation", "test"]
Pool = Literal["first-stage", "all-runs", "judged"]


@dataclass(frozen=True)
class Dataset:
    """One set of queries with what the project reads of it.

    Attributes:
        name: Registry key, e.g. ``dl20``.
        collection: The document collection its ids belong to (``msmarco``, ``scifact``).
        topics: Queries file.
        passages: Collection file (or files, read in order) holding the text of every passage the set names;
            ``None`` for a set of query text alone.
        qrels: Judgements, if any.
        grades: Qrels grade -> DL 0–3 grade, where the set's scale differs.
        official: Sparse official positives, each raised to at least :data:`POSITIVE_GRADE` (dev600).
        first_stage: BM25 candidates run, if there is one (negatives for the teacher, validation candidates).
        pool: What distillation scores: the first-stage run, the union of every run matching ``all_runs`` (no
            scores), or the judged pool (no scores).
        all_runs: Glob of the runs pooled with ``pool="all-runs"``.
        id_prefix: Put before query and document ids (see the module docstring).
        judged_queries_only: The set's queries are those its qrels judge (the topics file holds other splits').
        sparse: Unjudged candidates are no evidence of non-relevance (one official positive per query).
        held_out: Validation queries held out of training: a ``fraction`` of the judged queries (the trainer's
            ``val_fraction``) or a number of ``queries`` (its ``scifact_val``); ``None``: none.
        uses: What the project uses the set for; DL19 and SciFact test are ``test`` only.
        named_only: Used only where named, never by default (its first stage is a run the user makes).
        data_dir: The folder ``{data}`` stands for.
        runs_dir: The folder ``{runs}`` stands for.
    """

    name: str
    collection: str
    topics: str
    passages: str | tuple[str, ...] | None = None
    qrels: str | None = None
    grades: Mapping[int, int] | None = None
    official: str | None = None
    first_stage: str | None = None
    pool: Pool = "first-stage"
    all_runs: str | None = None
    id_prefix: str = ""
    judged_queries_only: bool = False
    sparse: bool = False
    held_out: Literal["fraction", "queries"] | None = None
    uses: frozenset[Use] = frozenset()
    named_only: bool = False
    data_dir: Path = DATA_DIR
    runs_dir: Path = RUNS_DIR

    def path(self, template: str) -> Path:
        """A path template of this set, resolved."""
        return Path(template.replace("{data}", str(self.data_dir)).replace("{runs}", str(self.runs_dir)))

    def _prefixed(self, qid: str) -> str:
        return self.id_prefix + qid

    def queries(self) -> dict[str, Query]:
        """The set's queries by (prefixed) qid, in file order."""
        topics = read_topics(self.path(self.topics))
        keep = {q.qid for q in self._raw_qrels()} if self.judged_queries_only else topics
        return {self._prefixed(q): Query(self._prefixed(q), t.text) for q, t in topics.items() if q in keep}

    def query_ids(self) -> set[str]:
        """The (prefixed) ids of :meth:`queries`."""
        if self.judged_queries_only:
            return {self._prefixed(q.qid) for q in self._raw_qrels()}
        return {self._prefixed(q) for q in read_topics(self.path(self.topics))}

    def _raw_qrels(self) -> list[Qrel]:
        if self.qrels is None:
            raise RankerError(f"dataset {self.name!r} has no judgements")
        return read_qrels(self.path(self.qrels))

    def judgements(self) -> list[Qrel]:
        """Judgements on the DL 0–3 scale, with prefixed ids (see the module docstring for the mapping)."""
        grades: dict[tuple[str, str], int] = {}
        for q in self._raw_qrels():
            grades[q.qid, q.docno] = self.grades[q.relevance] if self.grades else q.relevance
        if self.official:
            for q in read_qrels(self.path(self.official)):
                if q.relevance > 0:
                    grades[q.qid, q.docno] = max(grades.get((q.qid, q.docno), 0), POSITIVE_GRADE)
        p = self.id_prefix
        return [Qrel(p + qid, p + docno, g) for (qid, docno), g in grades.items()]

    def texts(self) -> Mapping[str, str]:
        """``docno -> contents`` of the set's passage file, prefixed docnos."""
        if self.passages is None:
            raise RankerError(f"dataset {self.name!r} has no passages")
        templates = (self.passages,) if isinstance(self.passages, str) else self.passages
        source = TextSource([self.path(t) for t in templates])
        if not self.id_prefix:
            return source
        return {self.id_prefix + d: text for d, text in source.items()}

    def candidates(self) -> Ranking:
        """The first-stage run (prefixed ids), or ``{}`` where the set has none."""
        if self.first_stage is None or not self.path(self.first_stage).is_file():
            return {}
        return self._prefix_ranking(read_run(self.path(self.first_stage)))

    def pool_candidates(self) -> Ranking:
        """What distillation scores for each query (prefixed ids): see :attr:`pool`. Pooled runs and judged
        pools carry no scores (0 for all), a single first-stage run keeps its own; a docno repeated in a pool
        keeps every occurrence here (the caller keeps the first)."""
        pooled: dict[str, list[ScoredDoc]] = {}
        if self.pool == "all-runs":
            for run in sorted(self.path(self.all_runs or "").parent.glob(Path(self.all_runs or "").name)):
                for qid, docs in read_run(run).items():
                    pooled.setdefault(qid, []).extend(ScoredDoc(qid, d.docno, 0.0) for d in docs)
        elif self.pool == "judged":
            for q in self._raw_qrels():
                pooled.setdefault(q.qid, []).append(ScoredDoc(q.qid, q.docno, 0.0))
        else:
            if self.first_stage is None:
                raise RankerError(f"dataset {self.name!r} has no first-stage run")
            pooled = read_run(self.path(self.first_stage))
            if self.judged_queries_only:
                judged = {q.qid for q in self._raw_qrels()}
                pooled = {qid: docs for qid, docs in pooled.items() if qid in judged}
        return self._prefix_ranking(pooled)

    def _prefix_ranking(self, ranking: Ranking) -> Ranking:
        if not self.id_prefix:
            return ranking
        p = self.id_prefix
        return {p + q: [ScoredDoc(p + q, p + d.docno, d.score) for d in docs] for q, docs in ranking.items()}


_REGISTRY: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    """Add ``dataset`` to the registry under its name (a name is registered once)."""
    if dataset.name in _REGISTRY:
        raise ValueError(f"dataset {dataset.name!r} is registered already")
    _REGISTRY[dataset.name] = dataset
    return dataset


def load(name: str, data_dir: str | Path = DATA_DIR, runs_dir: str | Path = RUNS_DIR,
         use: Use | None = None) -> Dataset:
    """The registered dataset ``name`` reading from ``data_dir`` (and the project's ``runs_dir``).

    Raises:
        RankerError: No dataset of that name, or (with ``use``) one not meant for that use, e.g. a test set
            given to a trainer; the message lists the fitting names.
    """
    if name not in _REGISTRY or (use is not None and use not in _REGISTRY[name].uses):
        what = f"{use} set" if use else "dataset"
        raise RankerError(f"unknown {what} {name!r}; known: {', '.join(names(use))}")
    return dataclasses.replace(_REGISTRY[name], data_dir=Path(data_dir), runs_dir=Path(runs_dir))


def names(use: Use | None = None, defaults_only: bool = False) -> tuple[str, ...]:
    """Registered names in registration order: those with ``use`` only when given, and with ``defaults_only``
    none of the :attr:`Dataset.named_only` sets."""
    return tuple(n for n, d in _REGISTRY.items()
                 if (use is None or use in d.uses) and not (defaults_only and d.named_only))


def normalised(text: str) -> str:
    """A query text compared for overlap: case-folded, punctuation dropped, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def overlap(name: str, data_dir: str | Path = DATA_DIR, runs_dir: str | Path = RUNS_DIR) -> list[str]:
    """The (prefixed) ids of ``name``'s queries that are also a validation or test query of the same collection,
    by id or by :func:`normalised` text; training on a set needs this empty."""
    dataset = load(name, data_dir, runs_dir)
    held_out: dict[str, str] = {}
    for other in names():
        held = load(other, data_dir, runs_dir)
        if other != name and held.collection == dataset.collection and {"validation", "test"} & held.uses:
            held_out.update((q.qid, normalised(q.text)) for q in held.queries().values())
    texts = set(held_out.values())
    return [q.qid for q in dataset.queries().values() if q.qid in held_out or normalised(q.text) in texts]


def collection_of(qid: str) -> str:
    """The collection of a (prefixed) query or document id: ``scifact`` for ``scifact:…``, else ``msmarco``."""
    for dataset in _REGISTRY.values():
        if dataset.id_prefix and qid.startswith(dataset.id_prefix):
            return dataset.collection
    return "msmarco"


def strip_prefix(identifier: str) -> str:
    """An id without the prefix its dataset gave it (the collection's own id)."""
    for dataset in _REGISTRY.values():
        if dataset.id_prefix and identifier.startswith(dataset.id_prefix):
            return identifier.removeprefix(dataset.id_prefix)
    return identifier


def collections() -> tuple[str, ...]:
    """The collections the registered sets draw from (``msmarco``, ``scifact``)."""
    return tuple(sorted({d.collection for d in _REGISTRY.values()}))


def with_prefix(collection: str, identifier: str) -> str:
    """A collection's own id as the registry's sets write it (``scifact:…``; MS MARCO ids have no prefix)."""
    return next((d.id_prefix for d in _REGISTRY.values() if d.collection == collection), "") + identifier


# ---------------------------------------------------------------- the shared data (../shared/data/README.md)

_MS = "{data}/msmarco-passage"
_SF = "{data}/beir-scifact"
_SCIFACT = dict(collection="scifact", topics=f"{_SF}/queries.jsonl", passages=f"{_SF}/corpus.jsonl",
                grades={0: 0, 1: POSITIVE_GRADE}, id_prefix="scifact:", judged_queries_only=True)


def _trec_dl(year: str, uses: frozenset[Use], judged: bool = True, **fields) -> Dataset:
    name = f"dl{year}"
    defaults = dict(collection="msmarco", topics=f"{_MS}/topics/{name}.tsv", passages=f"{_MS}/passages/{name}.tsv",
                    qrels=f"{_MS}/qrels/{name}.txt" if judged else None,
                    first_stage=f"{_MS}/runs/bm25.{name}.top100.trec", pool="all-runs",
                    all_runs=f"{_MS}/runs/*.{name}.top100.trec")
    return register(Dataset(name, uses=uses, **(defaults | fields)))


_trec_dl("19", frozenset({"test"}), pool="first-stage")
_trec_dl("20", frozenset({"teacher", "distill", "validation"}), held_out="fraction")
_trec_dl("21", frozenset({"teacher", "distill", "validation"}), held_out="fraction")
_trec_dl("22", frozenset({"distill"}), judged=False)
_trec_dl("23", frozenset({"teacher", "distill"}), first_stage=None, pool="judged", all_runs=None)
register(Dataset(
    "dev600", "msmarco", f"{_MS}/dev600/topics.tsv", f"{_MS}/dev600/passages.tsv",
    qrels=f"{_MS}/dev600/qrels.human.txt",
    grades={0: 0, 1: 1, 2: 2, 3: 3, 4: 3}, official=f"{_MS}/dev600/qrels.official.txt",
    first_stage=f"{_MS}/dev600/candidates.trec", sparse=True, uses=frozenset({"teacher", "distill"})))
register(Dataset(
    "msmarco-train", "msmarco", f"{_MS}/train-queries/queries.tsv",
    (f"{_MS}/dev600/passages.tsv", *(f"{_MS}/passages/dl{year}.tsv" for year in ("20", "21", "22", "23"))),
    first_stage="{runs}/bm25.msmarco-train.trec", uses=frozenset({"align", "distill"}), named_only=True))
"""48,794 MS MARCO training queries, no labels: alignment texts, and distillation queries over BM25 candidates
the user retrieves from the training sets' passages (never DL19's) into ``{runs}/bm25.msmarco-train.trec``
(``scripts/student_v3.sh``)."""
register(Dataset("scifact-train", qrels=f"{_SF}/qrels/train.tsv", first_stage="{runs}/bm25.scifact-train.trec",
                 held_out="queries", uses=frozenset({"teacher", "distill", "validation"}), **_SCIFACT))
register(Dataset("scifact-test", qrels=f"{_SF}/qrels/test.tsv", first_stage="{runs}/bm25.scifact-test.trec",
                 uses=frozenset({"test"}), **_SCIFACT))
