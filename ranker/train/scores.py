"""Teacher scores for distillation: every candidate of every distillation query, scored once and cached.

The cache is a folder (:mod:`ranker.io.artifact` type ``teacher-scores``: the teacher's name and the score type)
of Parquet parts. Scores are raw logits for a cross-encoder (``score_type: logit``) and fused z-scores for an
ensemble (``fused-z``); each collection's queries may have a teacher of their own (:class:`PerCollection`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.io.artifact import metadata_file, read_metadata, write_metadata
from ranker.io.atomic import atomic_open
from ranker.io.datasets import DATA_DIR, RUNS_DIR, collection_of, collections, strip_prefix, with_prefix
from ranker.io.formats import read_run
from ranker.models.kinds import reranker_kind
from ranker.models.loading import DEFAULT_TEACHERS, shipped_model
from ranker.pipeline import Reranker, pending, rescored
from ranker.rerank.registry import RerankerConfig, make_reranker
from ranker.train.config import DISTILL_SETS
from ranker.train.examples import DistillData, distill_data_held_out
from ranker.types import Query, Ranking, ScoredDoc

SCORE_COLUMNS = ["qid", "query", "docno", "text", "score"]


def score_with_teacher(teacher: Reranker, data: DistillData, folder: str | Path, name: str,
                       score_type: str = "logit", queries_per_part: int = 50,
                       limit: int | None = None) -> pd.DataFrame:
    """The ``teacher`` reranker's scores for every (query, candidate) of ``data``, cached in ``folder`` as Parquet.

    The teacher is any reranker over ``data.texts``: the cross-encoder (scores are its raw logits) or an
    ensemble (``score_type`` ``fused-z``: fused z-scores, :mod:`ranker.fusion`); ``name`` identifies it
    in the folder's metadata, and a folder made by another teacher is refused. A part holds whole queries (with
    query and passage text, so training needs nothing else) and appears atomically, so an interrupted run
    resumes at the first query without scores.
    With ``limit``, only the first ``limit`` queries of ``data`` (in its fixed order) are scored.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if metadata_file(folder) is not None:
        found = read_metadata(folder, "teacher-scores")
        if (found.get("teacher"), found.get("score_type")) != (name, score_type):
            raise RankerError(f"{folder}: scores of teacher {found.get('teacher')!r}, not {name!r}")
    else:
        write_metadata(folder, "teacher-scores", teacher=name, score_type=score_type)
    parts = sorted(folder.glob("part-*.parquet"))
    done = set(pd.concat([pd.read_parquet(p, columns=["qid"]) for p in parts])["qid"]) if parts else set()
    todo = [qid for qid in list(data.queries)[:limit] if qid not in done]
    with tqdm(total=sum(len(data.candidates[q]) for q in todo), desc="teacher", unit=" pairs") as bar:
        for start in range(0, len(todo), queries_per_part):
            chunk = todo[start:start + queries_per_part]
            scored = teacher.rerank({q: data.queries[q] for q in chunk}, {q: data.candidates[q] for q in chunk})
            by_docno = {(d.qid, d.docno): d.score for docs in scored.values() for d in docs}
            rows = [(qid, data.queries[qid].text, d.docno, data.texts[d.docno], by_docno[qid, d.docno])
                    for qid in chunk for d in data.candidates[qid]]
            frame = pd.DataFrame(rows, columns=SCORE_COLUMNS).astype({"score": np.float32})
            with atomic_open(folder / f"part-{len(parts) + start // queries_per_part:05d}.parquet", "wb") as f:
                frame.to_parquet(f, index=False)
            bar.update(len(rows))
    return read_scores(folder)


def read_scores(folder: str | Path) -> pd.DataFrame:
    """Cached teacher scores: one row per pair, columns :data:`SCORE_COLUMNS`."""
    parts = sorted(Path(folder).glob("part-*.parquet"))
    if not parts:
        raise RankerError(f"{folder}: no teacher scores (run 'rank distill --score-only' first)")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


class PerCollection(Reranker):
    """Each query reranked by its collection's reranker (:func:`ranker.io.datasets.collection_of`)."""

    name = "per-collection"

    def __init__(self, rerankers: Mapping[str, Reranker]):
        self.rerankers = dict(rerankers)

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        ranking: Ranking = {}
        for name, reranker in self.rerankers.items():
            mine = {q: t for q, t in queries.items() if collection_of(q) == name}
            if mine:
                ranking |= reranker.rerank(mine, {q: candidates[q] for q in mine if q in candidates})
        return ranking

    def config(self) -> dict:
        return {"stage": self.name, **{name: r.config() for name, r in self.rerankers.items()}}


class RunScores(Reranker):
    """A teacher given as its run: each candidate's score read from a TREC run (prefixed ids).

    Raises:
        RankerError: A candidate the run does not score.
    """

    name = "run"

    def __init__(self, ranking: Ranking, source: str):
        self.scores = {(d.qid, d.docno): d.score for docs in ranking.values() for d in docs}
        self.source = source

    def rerank(self, queries: Mapping[str, Query], candidates: Ranking) -> Ranking:
        docs = pending(queries, candidates)
        missing = [d for d in docs if (d.qid, d.docno) not in self.scores]
        if missing:
            raise RankerError(f"{self.source}: no score for {len(missing)} candidate(s), e.g. query "
                              f"{strip_prefix(missing[0].qid)} passage {strip_prefix(missing[0].docno)}")
        return rescored(docs, [self.scores[d.qid, d.docno] for d in docs])

    def config(self) -> dict:
        return {"stage": self.name, "run": self.source}


def run_teacher_scores(folder: str | Path, runs: Mapping[str, str | Path], data_dir: str | Path = DATA_DIR,
                       sets: Sequence[str] = DISTILL_SETS, seed: int = 13,
                       runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """Cache a teacher's scores read from its runs, one per collection (``{"msmarco": run, ...}``, the
    collection's own ids): e.g. ``rank fuse`` of its components' runs over the candidates ``rank datasets
    distill`` wrote, or a run scored on another machine. Only the (query, candidate) pairs a run scores are
    kept; ``score_type`` is ``run`` (pairs compare within a query only)."""
    known = collections()
    if unknown := [c for c in runs if c not in known]:
        raise RankerError(f"--teacher-run {unknown[0]}=…: not a collection the distillation sets hold (known: "
                          f"{', '.join(known)})")
    data = distill_data_held_out(data_dir, sets, seed, runs_dir)
    ranking: Ranking = {}
    for collection, path in runs.items():
        for qid, docs in read_run(path).items():
            q = with_prefix(collection, qid)
            ranking[q] = [ScoredDoc(q, with_prefix(collection, d.docno), d.score) for d in docs]
    name = json.dumps({c: str(p) for c, p in sorted(runs.items())})
    return score_with_teacher(RunScores(ranking, name), data.within(ranking), folder, name, "run")


def teacher_scores(folder: str | Path, teacher: str | None = None, scifact_teacher: str | None = None,
                   data_dir: str | Path = DATA_DIR, sets: Sequence[str] = DISTILL_SETS, seed: int = 13,
                   batch_size: int = RerankerConfig.batch_size, limit: int | None = None,
                   runs_dir: str | Path = RUNS_DIR) -> pd.DataFrame:
    """Score every distillation query of ``sets`` still missing from the cache in ``folder``.

    Args:
        folder: The score cache (created, or resumed).
        teacher: Teacher of the MS MARCO queries: a cross-encoder folder or an ensemble file (its kind is read
            from it), or a Hugging Face cross-encoder. Default: the shipped ensemble the shipped student learnt from.
        scifact_teacher: Teacher of the SciFact train queries. Default: ``teacher`` when one is given, else the
            shipped SciFact ensemble.
        data_dir: The shared data folder.
        sets: Distillation sets (:data:`ranker.train.config.DISTILL_SETS`).
        seed: The validation split's seed: the teacher's validation queries are never scored.
        batch_size: Pairs per forward pass of the teacher.
        limit: Score only the first ``limit`` queries (their order is fixed).
        runs_dir: The project's runs (BM25 over SciFact train queries).
    """
    msmarco = teacher or str(shipped_model(DEFAULT_TEACHERS["msmarco"]))
    teachers = {"msmarco": msmarco,
                "scifact": scifact_teacher or (teacher or str(shipped_model(DEFAULT_TEACHERS["scifact"])))}
    kinds = {c: reranker_kind(t, default="cross-encoder") for c, t in teachers.items()}
    pairs = distill_data_held_out(data_dir, sets, seed, runs_dir)
    options = RerankerConfig(texts=pairs.texts, batch_size=batch_size)
    scorer = PerCollection({c: make_reranker(kinds[c], dataclasses.replace(options, model=t))
                            for c, t in teachers.items()})
    name = msmarco if teachers["scifact"] == msmarco else json.dumps(teachers)
    score_type = "fused-z" if "ensemble" in kinds.values() else "logit"
    return score_with_teacher(scorer, pairs, folder, name, score_type, limit=limit)
