"""Training examples for the cross-encoder teacher, built from every labelled set by one rule.

**The rule.** Every judgement is put on the TREC DL 0–3 scale, then for each query:

* positives: passages of grade >= 2 (the track's "relevant");
* negatives: passages judged 0, and BM25 candidates with no judgement -- except in sparsely judged sets
  (dev600, see ``sparse``), where an unjudged candidate is no evidence: on dev600's 125 human-judged
  queries, 39% of the BM25 top-20 have grade >= 2;
* grade 1 passages are used as neither;
* a passage with no text is dropped, and a query with no positive or no negative is dropped.

**SciFact train** (``scifact-train``): the binary BEIR judgements (1 -> grade 2), negatives from the project's
BM25 run over the train queries (``runs/bm25.scifact-train.trec``, made by ``scripts/reproduce.sh``); its query
and document ids get the prefix ``scifact:`` (they are numbers, like MS MARCO's). SciFact test plays no part.

**Grade mapping.** DL20, DL21, DL23: the qrels grade as is. dev600: the human grade ``h`` (0–4, where judged)
maps to ``{0: 0, 1: 1, 2: 2, 3: 3, 4: 3}``; the official MS MARCO positive is raised to at least 2, so it is
always a positive (its human grade, where there is one, can only make it 3).

**Validation.** A fixed, seeded ``val_fraction`` of the judged DL20 and DL21 queries is held out entirely:
it gives no training examples, and the teacher is selected on nDCG@10 of reranking its BM25 top-100. When
SciFact train is used, a seeded ``scifact_val`` of its queries is held out the same way, and the selection
score is the mean of the two collections' nDCG@10 (each collection counts once, whatever its query count).
DL19 and SciFact test play no part here.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .formats import (
    read_qrels,
    read_run,
    read_topics,
    write_qrels,
    write_run,
    write_topics,
)
from .textsource import TextSource
from .types import Qrel, Query, Ranking, ScoredDoc

DEFAULT_DATA = Path("../shared/data/msmarco-passage")
"""MS MARCO passage data, relative to the project root (see ``../shared/data/README.md``)."""

POSITIVE_GRADE = 2
DEV600_HUMAN_TO_DL = {0: 0, 1: 1, 2: 2, 3: 3, 4: 3}
TRAIN_SETS = ("dl20", "dl21", "dl23", "dev600")
VALIDATION_SETS = ("dl20", "dl21")
SCIFACT_VAL_QUERIES = 50
"""SciFact train queries held out for validation when ``scifact-train`` is used."""
SPARSE_SETS = ("dev600",)
"""Sets whose unjudged candidates are not negatives by default (one official positive per query)."""
SCIFACT_PREFIX = "scifact:"
SCIFACT_CANDIDATES = Path("runs/bm25.scifact-train.trec")
"""The project's BM25 run over SciFact train queries, relative to the project root."""


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
        """nDCG@10 of ``ranking`` per collection (``msmarco``, ``scifact``), by :mod:`ranker.evaluate`."""
        from .evaluate import evaluate, parse_measures

        values = evaluate(self.qrels, {"r": ranking}, parse_measures(["nDCG@10"])).queries["r"]["nDCG@10"]
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

        def strip(x: str) -> str:
            return x.removeprefix(SCIFACT_PREFIX)

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


def graded_qrels(data: Path, name: str) -> list[Qrel]:
    """Judgements of one set on the DL 0–3 scale (dev600 and SciFact mapped as the module docstring says)."""
    if name == "scifact-train":
        return [Qrel(SCIFACT_PREFIX + q.qid, SCIFACT_PREFIX + q.docno, POSITIVE_GRADE if q.relevance > 0 else 0)
                for q in read_qrels(data.parent / "beir-scifact" / "qrels" / "train.tsv")]
    if name != "dev600":
        return read_qrels(data / "qrels" / f"{name}.txt")
    grades = {(q.qid, q.docno): DEV600_HUMAN_TO_DL[q.relevance]
              for q in read_qrels(data / "dev600" / "qrels.human.txt")}
    for q in read_qrels(data / "dev600" / "qrels.official.txt"):
        if q.relevance > 0:
            grades[q.qid, q.docno] = max(grades.get((q.qid, q.docno), 0), POSITIVE_GRADE)
    return [Qrel(qid, docno, g) for (qid, docno), g in grades.items()]


def _prefixed(name: str, topics: dict[str, Query], candidates: Ranking, source: Mapping[str, str]
              ) -> tuple[dict[str, Query], Ranking, Mapping[str, str]]:
    """SciFact's topics, candidates and texts under the ``scifact:`` prefix; other sets as they are."""
    if name != "scifact-train":
        return topics, candidates, source
    p = SCIFACT_PREFIX
    return ({p + q: Query(p + q, t.text) for q, t in topics.items()},
            {p + q: [ScoredDoc(p + q, p + d.docno, d.score) for d in ds] for q, ds in candidates.items()},
            {p + d: text for d, text in source.items()})


def _paths(data: Path, name: str, scifact_candidates: Path) -> tuple[Path, Path, Path | None]:
    """Topics, passages and BM25 candidates (``None`` where there is no run) of one set."""
    if name == "scifact-train":
        scifact = data.parent / "beir-scifact"
        return scifact / "queries.jsonl", scifact / "corpus.jsonl", scifact_candidates
    if name == "dev600":
        return data / "dev600" / "topics.tsv", data / "dev600" / "passages.tsv", data / "dev600" / "candidates.trec"
    run = data / "runs" / f"bm25.{name}.top100.trec"
    return data / "topics" / f"{name}.tsv", data / "passages" / f"{name}.tsv", run if run.is_file() else None


def collection_of(qid: str) -> str:
    """``scifact`` for a ``scifact:`` id, else ``msmarco``."""
    return "scifact" if qid.startswith(SCIFACT_PREFIX) else "msmarco"


def validation_qids(qids: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` of ``qids`` (rounded), independent of their order."""
    ordered = sorted(qids)
    return set(random.Random(seed).sample(ordered, round(fraction * len(ordered))))


def build_trainset(data: str | Path = DEFAULT_DATA, sets: tuple[str, ...] = TRAIN_SETS,
                   val_fraction: float = 0.25, seed: int = 13, sparse: tuple[str, ...] = SPARSE_SETS,
                   scifact_candidates: str | Path = SCIFACT_CANDIDATES,
                   scifact_val: int = SCIFACT_VAL_QUERIES) -> TrainSet:
    """Examples from ``sets`` by the module's rule, minus the validation queries of DL20/DL21.

    Args:
        data: The ``msmarco-passage`` data folder.
        sets: Labelled sets to use (any of ``dl20``, ``dl21``, ``dl23``, ``dev600``, ``scifact-train``).
        val_fraction: Share of each of DL20's and DL21's judged queries held out for validation.
        seed: Seed of the validation split.
        sparse: Sets whose unjudged candidates are not used as negatives.
        scifact_candidates: The project's BM25 run over SciFact train queries (for ``scifact-train``).
        scifact_val: SciFact train queries held out for validation (seeded like the DL split).
    """
    data = Path(data)
    examples: list[QueryExamples] = []
    texts: dict[str, str] = {}
    validation = ValidationSet()
    for name in sets:
        topics_path, passages_path, run_path = _paths(data, name, Path(scifact_candidates))
        qrels = graded_qrels(data, name)
        topics, candidates, source = _prefixed(name, read_topics(topics_path), read_run(run_path) if run_path else {},
                                               TextSource([passages_path]))
        judged: dict[str, dict[str, int]] = {}
        for q in qrels:
            judged.setdefault(q.qid, {})[q.docno] = q.relevance
        held = set()
        if name in VALIDATION_SETS:
            held = validation_qids(list(judged), val_fraction, seed)
        elif name == "scifact-train" and judged:
            held = validation_qids(list(judged), scifact_val / len(judged), seed)
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
