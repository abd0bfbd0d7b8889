"""What the trainers train on: the teacher's labelled examples, the student's unlabelled distillation queries.

Sets, their files, grade mappings and id prefixes are declared in :mod:`ranker.io.datasets`.

Teacher examples are built from every labelled set by one rule.

**The rule.** Every judgement is put on the TREC DL 0–3 scale, then for each query:

* positives: passages of grade >= 2 (the track's "relevant");
* negatives: passages judged 0, and BM25 candidates with no judgement -- except in sparsely judged sets
  (dev600, see ``sparse``), where an unjudged candidate is no evidence: on dev600's 125 human-judged
  queries, 39% of the BM25 top-20 have grade >= 2;
* grade 1 passages are used as neither;
* a passage with no text is dropped, and a query with no positive or no negative is dropped.

**SciFact train** (``scifact-train``): negatives from the project's BM25 run over the train queries
(``runs/bm25.scifact-train.trec``, made by ``scripts/reproduce.sh``). SciFact test plays no part.

**Validation.** A fixed, seeded ``val_fraction`` of the judged DL20 and DL21 queries is held out entirely:
it gives no training examples, and the teacher is selected on nDCG@10 of reranking its BM25 top-100. When
SciFact train is used, a seeded ``scifact_val`` of its queries is held out the same way, and the selection
score is the mean of the two collections' nDCG@10 (each collection counts once, whatever its query count).
DL19 and SciFact test play no part here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ranker.errors import RankerError
from ranker.io import datasets
from ranker.io.datasets import DATA_DIR, POSITIVE_GRADE, RUNS_DIR, collection_of, strip_prefix
from ranker.io.formats import write_collection, write_qrels, write_run, write_topics
from ranker.measures import parse_measures, per_query
from ranker.train.config import DISTILL_SETS, SCIFACT_VAL_QUERIES, SPARSE_SETS, TEACHER_SETS
from ranker.types import Doc, Qrel, Query, Ranking, ScoredDoc


@dataclass
class QueryExamples:
    """One training query: positives with their grade (>= 2) and negatives (judged 0 or unjudged candidates)."""

    qid: str
    query: str
    source: str
    positives: dict[str, int]
    negatives: list[str]


@dataclass
class ValidationSet:
    """Held-out queries with their BM25 candidates and judgements, for model selection."""

    queries: dict[str, Query] = field(default_factory=dict)
    candidates: Ranking = field(default_factory=dict)
    qrels: list[Qrel] = field(default_factory=list)

    def scores(self, ranking: Ranking) -> dict[str, float]:
        """nDCG@10 of ``ranking`` per collection (``msmarco``, ``scifact``)."""
        values = per_query(self.qrels, ranking, parse_measures(["nDCG@10"]))["nDCG@10"]
        return {c: round(float(v), 4) for c, v in values.groupby(collection_of).mean().items()}

    def only(self, collections: set[str]) -> ValidationSet:
        """The queries of ``collections`` (``msmarco``, ``scifact``) alone."""
        keep = {q for q in self.queries if collection_of(q) in collections}
        return ValidationSet({q: self.queries[q] for q in keep},
                             {q: docs for q, docs in self.candidates.items() if q in keep},
                             [r for r in self.qrels if r.qid in keep])

    def write(self, folder: str | Path) -> None:
        """Per collection ``NAME.topics.tsv``, ``NAME.qrels.txt``, ``NAME.bm25.trec`` with the collection's own ids.

        They let ``rank run`` / ``rank evaluate`` (and fusion weights) work on exactly the held-out queries.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        strip = strip_prefix
        for name in sorted({collection_of(q) for q in self.queries}):
            qids = sorted(q for q in self.queries if collection_of(q) == name)
            write_topics([Query(strip(q), self.queries[q].text) for q in qids], folder / f"{name}.topics.tsv")
            write_qrels([Qrel(strip(r.qid), strip(r.docno), r.relevance) for r in self.qrels
                         if collection_of(r.qid) == name], folder / f"{name}.qrels.txt")
            write_run({strip(q): [ScoredDoc(strip(q), strip(d.docno), d.score) for d in self.candidates[q]]
                       for q in qids}, folder / f"{name}.bm25.trec", "bm25")


@dataclass
class TrainSet:
    """Training examples, the text of every passage they and the validation candidates name, the validation set."""

    examples: list[QueryExamples]
    texts: Mapping[str, str]
    validation: ValidationSet

    def summary(self) -> dict:
        """Counts per source, for logs and model metadata."""
        per: dict[str, dict[str, int]] = {}
        for ex in self.examples:
            s = per.setdefault(ex.source, {"queries": 0, "positives": 0, "negatives": 0})
            s["queries"] += 1
            s["positives"] += len(ex.positives)
            s["negatives"] += len(ex.negatives)
        return {"train": per, "validation_queries": len(self.validation.queries),
                "validation_qids": sorted(self.validation.queries)}


def validation_qids(qids: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of ``qids`` (rounded), independent of their order."""
    ordered = sorted(qids)
    return set(random.Random(seed).sample(ordered, round(fraction * len(ordered))))


def held_out(dataset: datasets.Dataset, judged: Sequence[str], val_fraction: float, scifact_val: int,
             seed: int) -> set[str]:
    """The validation queries of ``dataset`` among its ``judged`` query ids (none where it holds none out)."""
    if dataset.held_out == "fraction":
        return validation_qids(list(judged), val_fraction, seed)
    if dataset.held_out == "queries" and judged:
        return validation_qids(list(judged), scifact_val / len(judged), seed)
    return set()


def build_trainset(data_dir: str | Path = DATA_DIR, sets: Sequence[str] = TEACHER_SETS,
                   val_fraction: float = 0.25, seed: int = 13, sparse: Sequence[str] = SPARSE_SETS,
                   runs_dir: str | Path = RUNS_DIR, scifact_val: int = SCIFACT_VAL_QUERIES) -> TrainSet:
    """Examples from ``sets`` by the module's rule, minus the held-out validation queries.

    Args:
        data_dir: The shared data folder.
        sets: Labelled sets to use (names in :mod:`ranker.io.datasets`).
        val_fraction: Share of each of DL20's and DL21's judged queries held out for validation.
        seed: Seed of the validation split.
        sparse: Sets whose unjudged candidates are not used as negatives.
        runs_dir: The project's runs (BM25 over SciFact train queries, for ``scifact-train``).
        scifact_val: SciFact train queries held out for validation (seeded like the DL split).
    """
    examples: list[QueryExamples] = []
    texts: dict[str, str] = {}
    validation = ValidationSet()
    for name in sets:
        dataset = _labelled(name, data_dir, runs_dir)
        qrels = dataset.judgements()
        topics, candidates, source = dataset.queries(), dataset.candidates(), dataset.texts()
        judged: dict[str, dict[str, int]] = {}
        for q in qrels:
            judged.setdefault(q.qid, {})[q.docno] = q.relevance
        held = held_out(dataset, list(judged), val_fraction, scifact_val, seed)
        for qid in sorted(held):
            validation.queries[qid] = topics[qid]
            validation.candidates[qid] = candidates[qid]
            validation.qrels += [q for q in qrels if q.qid == qid]
            texts |= {d.docno: source[d.docno] for d in candidates[qid]}
        for qid, grades in judged.items():
            if qid in held:
                continue
            positives = {d: g for d, g in grades.items() if g >= POSITIVE_GRADE and d in source}
            negatives = [d for d, g in grades.items() if g == 0 and d in source]
            if name not in sparse:
                negatives += [d.docno for d in candidates.get(qid, []) if d.docno not in grades and d.docno in source]
            if positives and negatives:
                examples.append(QueryExamples(qid, topics[qid].text, name, positives, negatives))
                texts |= {d: source[d] for d in [*positives, *negatives]}
    return TrainSet(examples, texts, validation)


def _labelled(name: str, data_dir: str | Path, runs_dir: str | Path) -> datasets.Dataset:
    """A set the teacher may learn from: judged, and no test set."""
    dataset = datasets.load(name, data_dir, runs_dir)
    if dataset.qrels is None or "test" in dataset.uses:
        trainable = [n for n in datasets.names() if datasets.load(n).qrels and "test" not in datasets.load(n).uses]
        raise RankerError(f"{name!r} is not a labelled training set; known: {', '.join(trainable)}")
    return dataset


def training_labels(data_dir: str | Path = DATA_DIR) -> dict[tuple[str, str], int]:
    """``(qid, docno) -> grade`` (DL 0–3 scale) of every labelled training set, prefixed ids."""
    return {(q.qid, q.docno): q.relevance for name in TEACHER_SETS
            for q in datasets.load(name, data_dir).judgements()}


# ---------------------------------------------------------------- distillation: queries and candidates, no labels


@dataclass
class DistillData:
    """Queries, their candidates (no labels needed) and the candidates' text; ``source`` names each query's set."""

    queries: dict[str, Query] = field(default_factory=dict)
    candidates: Ranking = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, topics: Mapping[str, Query], candidates: Ranking, texts: Mapping[str, str],
            exclude: set[str]) -> None:
        """Add one set's queries (minus ``exclude``), keeping the candidates that have text.

        A set with one first-stage run keeps its scores (an ensemble teacher's ``identity`` term uses them);
        unions of runs and judged pools have none (score 0 for all, which that term then ignores). A docno
        repeated across pooled runs keeps its first occurrence.
        """
        for qid, docs in candidates.items():
            kept: dict[str, float] = {}
            for d in docs:
                if d.docno in texts:
                    kept.setdefault(d.docno, d.score)
            if qid in exclude or qid not in topics or not kept:
                continue
            self.queries[qid] = Query(qid, topics[qid].text)
            self.candidates[qid] = [ScoredDoc(qid, d, score) for d, score in kept.items()]
            self.texts |= {d: texts[d] for d in kept}
            self.source[qid] = name

    def write(self, folder: str | Path, depth: int | None = None) -> None:
        """Per collection ``NAME.topics.tsv``, ``NAME.candidates.trec`` and ``NAME.passages.tsv`` (the text of
        every candidate written; the collection's own ids; with ``depth``, each query's first ``depth``
        candidates): what a teacher's rerankers score with ``rank run``, for
        :func:`ranker.train.scores.run_teacher_scores`, and what ``rank index`` makes a pool of."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in sorted({collection_of(q) for q in self.queries}):
            qids = [q for q in self.queries if collection_of(q) == name]
            kept = {q: self.candidates[q][:depth] for q in qids}
            write_topics([Query(strip_prefix(q), self.queries[q].text) for q in qids], folder / f"{name}.topics.tsv")
            write_run({strip_prefix(q): [ScoredDoc(strip_prefix(q), strip_prefix(d.docno), d.score) for d in docs]
                       for q, docs in kept.items()}, folder / f"{name}.candidates.trec", "distill")
            docnos = dict.fromkeys(d.docno for docs in kept.values() for d in docs)
            write_collection([Doc(strip_prefix(d), self.texts[d]) for d in docnos], folder / f"{name}.passages.tsv")

    def within(self, ranking: Ranking) -> DistillData:
        """The queries and candidates that ``ranking`` (prefixed ids) scores, in this data's order."""
        kept = DistillData()
        for qid, docs in self.candidates.items():
            scored = {d.docno for d in ranking.get(qid, [])}
            mine = [d for d in docs if d.docno in scored]
            if mine:
                kept.queries[qid], kept.candidates[qid], kept.source[qid] = self.queries[qid], mine, self.source[qid]
                kept.texts |= {d.docno: self.texts[d.docno] for d in mine}
        return kept

    def summary(self) -> dict:
        per: dict[str, dict[str, int]] = {}
        for qid, name in self.source.items():
            s = per.setdefault(name, {"queries": 0, "pairs": 0})
            s["queries"] += 1
            s["pairs"] += len(self.candidates[qid])
        return per


def distill_data(data_dir: str | Path = DATA_DIR, sets: Sequence[str] = DISTILL_SETS,
                 exclude: set[str] = frozenset(), runs_dir: str | Path = RUNS_DIR) -> DistillData:
    """Every query of ``sets`` with its distillation candidates (:attr:`ranker.io.datasets.Dataset.pool`), minus
    ``exclude`` (the validation queries).

    Args:
        data_dir: The shared data folder.
        sets: Any of :data:`DISTILL_SETS`.
        exclude: Query ids never to train on.
        runs_dir: The project's runs (BM25 over SciFact train queries, for ``scifact-train``).
    """
    out = DistillData()
    for name in sets:
        dataset = datasets.load(name, data_dir, runs_dir, use="distill")
        out.add(name, dataset.queries(), dataset.pool_candidates(), dataset.texts(), exclude)
    return out


def set_queries(data_dir: str | Path, sets: Sequence[str]) -> set[str]:
    """Query ids of the ``sets`` as :func:`distill_data` and the score cache write them."""
    return set().union(*(datasets.load(name, data_dir, use="distill").query_ids() for name in sets))


def validation_split(data_dir: str | Path = DATA_DIR, val_fraction: float = 0.25, seed: int = 13,
                     scifact: bool = True, runs_dir: str | Path = RUNS_DIR) -> TrainSet:
    """The teacher's held-out validation queries (DL20/DL21, and SciFact train's when ``scifact``) with texts."""
    sets = [n for n in datasets.names("validation") if scifact or datasets.load(n).collection != "scifact"]
    return build_trainset(data_dir, sets, val_fraction, seed, runs_dir=runs_dir)


def distill_data_held_out(data_dir: str | Path = DATA_DIR, sets: Sequence[str] = DISTILL_SETS, seed: int = 13,
                          runs_dir: str | Path = RUNS_DIR) -> DistillData:
    """:func:`distill_data` of ``sets`` minus the teacher's validation queries (split ``seed``): what teacher
    scores are computed over and what ``rank datasets distill`` writes."""
    validation = validation_split(data_dir, seed=seed, scifact="scifact-train" in sets, runs_dir=runs_dir)
    return distill_data(data_dir, sets, exclude=set(validation.validation.queries), runs_dir=runs_dir)
