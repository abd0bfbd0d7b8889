"""Distillation: the TwinBERT student learns to reproduce the cross-encoder teacher's scores.

Distillation needs no labels, so every query with candidates is training data (:func:`distill_data`): DL20–DL22
with the union of every first-stage run of those years, DL23's judged pools, dev600's BM25 top-20 and SciFact
train with the project's BM25 candidates. DL19 and SciFact test are never used; the teacher's validation
queries (a quarter of DL20/DL21) are left out here too and pick the student's checkpoint.

Teacher scores are raw logits (``score_type: logit``), computed once and cached as Parquet parts
(:func:`score_with_teacher`, resumable: a part holds whole queries and is written atomically).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import RankerError
from .formats import read_qrels, read_run, read_topics
from .io import atomic_open, write_json
from .pipeline import Reranker
from .teacher import group_loss
from .textsource import TextSource
from .training import LoopSettings, TrainingRun
from .trainset import (
    POSITIVE_GRADE,
    SCIFACT_CANDIDATES,
    SCIFACT_PREFIX,
    TRAIN_SETS,
    VALIDATION_SETS,
    build_trainset,
    collection_of,
    graded_qrels,
)
from .types import Query, Ranking, ScoredDoc, cutoff

DISTILL_SETS = ("dl20", "dl21", "dl22", "dl23", "dev600", "scifact-train")
SCORES_META = "meta.json"
SCORE_COLUMNS = ["qid", "query", "docno", "text", "score"]


@dataclass
class DistillData:
    """Queries, their candidates (no labels needed) and the candidates' text; ``source`` names each query's set."""

    queries: dict[str, Query] = field(default_factory=dict)
    candidates: Ranking = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, topics: Mapping[str, Query], candidates: Mapping[str, Sequence[tuple[str, float]]],
            texts: Mapping[str, str], exclude: set[str], prefix: str = "") -> None:
        """Add one set's queries (minus ``exclude``, prefixed ids), keeping the candidates (docno, score) with text.

        A set with one first-stage run keeps its scores (an ensemble teacher's ``identity`` term uses them);
        unions of runs and judged pools have none (score 0 for all, which that term then ignores).

        ``prefix`` goes before the set's query and document ids where they could collide with another
        collection's (SciFact's numeric ids against MS MARCO's).
        """
        for qid, docs in candidates.items():
            kept: dict[str, float] = {}
            for d, score in docs:
                if d in texts:
                    kept.setdefault(d, score)  # a docno repeated across runs: its first occurrence
            key = prefix + qid
            if key in exclude or qid not in topics or not kept:
                continue
            self.queries[key] = Query(key, topics[qid].text)
            self.candidates[key] = [ScoredDoc(key, prefix + d, score) for d, score in kept.items()]
            self.texts |= {prefix + d: texts[d] for d in kept}
            self.source[key] = name

    def summary(self) -> dict:
        per: dict[str, dict[str, int]] = {}
        for qid, name in self.source.items():
            s = per.setdefault(name, {"queries": 0, "pairs": 0})
            s["queries"] += 1
            s["pairs"] += len(self.candidates[qid])
        return per


def _topics_file(data: Path, name: str) -> Path:
    """The topics file of the distillation set ``name`` under the shared data folder ``data``."""
    if name == "scifact-train":
        return data / "beir-scifact" / "queries.jsonl"
    if name == "dev600":
        return data / "msmarco-passage" / "dev600" / "topics.tsv"
    return data / "msmarco-passage" / "topics" / f"{name}.tsv"


def distill_data(data: str | Path, sets: Sequence[str] = DISTILL_SETS, exclude: set[str] = frozenset(),
                 scifact_candidates: str | Path | None = None) -> DistillData:
    """Every query of ``sets`` with its candidates, minus ``exclude`` (the validation queries).

    Args:
        data: The shared data folder (holding ``msmarco-passage/`` and ``beir-scifact/``).
        sets: Any of :data:`DISTILL_SETS`.
        exclude: Query ids never to train on.
        scifact_candidates: The project's BM25 run over SciFact train queries (needed for ``scifact-train``).
    """
    data = Path(data)
    msmarco, out = data / "msmarco-passage", DistillData()
    for name in sets:
        if name in ("dl20", "dl21", "dl22"):
            runs = sorted((msmarco / "runs").glob(f"*.{name}.top100.trec"))
            union: dict[str, list[tuple[str, float]]] = {}
            for run in runs:
                for qid, docs in read_run(run).items():
                    union.setdefault(qid, []).extend((d.docno, 0.0) for d in docs)
            out.add(name, read_topics(_topics_file(data, name)), union,
                    TextSource([msmarco / "passages" / f"{name}.tsv"]), exclude)
        elif name == "dl23":
            pools: dict[str, list[tuple[str, float]]] = {}
            for q in read_qrels(msmarco / "qrels" / "dl23.txt"):
                pools.setdefault(q.qid, []).append((q.docno, 0.0))
            out.add(name, read_topics(_topics_file(data, name)), pools,
                    TextSource([msmarco / "passages" / "dl23.tsv"]), exclude)
        elif name == "dev600":
            dev = msmarco / "dev600"
            run = {qid: [(d.docno, d.score) for d in docs] for qid, docs in read_run(dev / "candidates.trec").items()}
            out.add(name, read_topics(_topics_file(data, name)), run, TextSource([dev / "passages.tsv"]), exclude)
        elif name == "scifact-train":
            if scifact_candidates is None:
                raise RankerError("scifact-train needs the project's BM25 run over SciFact train queries")
            scifact = data / "beir-scifact"
            train = {q.qid for q in read_qrels(scifact / "qrels" / "train.tsv")}
            test = {q.qid for q in read_qrels(scifact / "qrels" / "test.tsv")}
            run = {qid: [(d.docno, d.score) for d in docs] for qid, docs in read_run(scifact_candidates).items()
                   if qid in train and qid not in test}
            out.add(name, read_topics(_topics_file(data, name)), run, TextSource([scifact / "corpus.jsonl"]),
                    exclude, prefix=SCIFACT_PREFIX)
        else:
            raise RankerError(f"unknown distillation set {name!r}; known: {', '.join(DISTILL_SETS)}")
    return out


def set_queries(data: str | Path, sets: Sequence[str]) -> set[str]:
    """Query ids of the distillation ``sets`` as :func:`distill_data` and the score cache write them."""
    data, ids = Path(data), set()
    for name in sets:
        if name == "scifact-train":
            ids |= {SCIFACT_PREFIX + q.qid for q in read_qrels(data / "beir-scifact" / "qrels" / "train.tsv")}
        elif name in DISTILL_SETS:
            ids |= set(read_topics(_topics_file(data, name)))
        else:
            raise RankerError(f"unknown distillation set {name!r}; known: {', '.join(DISTILL_SETS)}")
    return ids


# ---------------------------------------------------------------- teacher scores


def score_with_teacher(teacher: Reranker, data: DistillData, folder: str | Path, name: str,
                       score_type: str = "logit", queries_per_part: int = 50,
                       limit: int | None = None) -> pd.DataFrame:
    """The ``teacher`` reranker's scores for every (query, candidate) of ``data``, cached in ``folder`` as Parquet.

    The teacher is any reranker over ``data.texts``: the cross-encoder (scores are its raw logits) or an
    ensemble (``score_type`` ``fused-z``: fused z-scores, :mod:`ranker.fusion`); ``name`` identifies it in
    ``meta.json``, and a folder made by another teacher is refused. A part holds whole queries (with query and passage text, so training needs
    nothing else) and appears atomically, so an interrupted run resumes at the first query without scores.
    With ``limit``, only the first ``limit`` queries of ``data`` (in its fixed order) are scored.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"teacher": name, "score_type": score_type}
    meta_path = folder / SCORES_META
    if meta_path.is_file():
        found = json.loads(meta_path.read_text())
        if found != meta:
            raise RankerError(f"{folder}: scores of teacher {found.get('teacher')!r}, not {name!r}")
    else:
        write_json(meta_path, meta)
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


# ---------------------------------------------------------------- losses


def margin_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Margin-MSE over every pair of a group: ``mean(((s_i - s_j) - (t_i - t_j))²)``."""
    s = student.unsqueeze(-1) - student.unsqueeze(-2)
    t = teacher.unsqueeze(-1) - teacher.unsqueeze(-2)
    return ((s - t) ** 2).mean()


def listwise_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)) per group, times T², averaged."""
    target = (teacher / temperature).softmax(-1)
    log_p = (student / temperature).log_softmax(-1)
    return (target * (target.clamp_min(1e-12).log() - log_p)).sum(-1).mean() * temperature**2


def soft_bce(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """The paper's loss: cross-entropy of σ(s) against the teacher's soft probability σ(t/T)."""
    return nn.functional.binary_cross_entropy_with_logits(student, (teacher / temperature).sigmoid())


LOSSES: dict[str, Callable[..., torch.Tensor]] = {"margin-mse": margin_mse, "kl": listwise_kl, "bce": soft_bce}


# ---------------------------------------------------------------- student training


@dataclass
class DistillConfig:
    """What :func:`distill` trains, from which teacher scores, for how long.

    Attributes:
        output: Run folder (see :mod:`ranker.training`); the final fp16 student is ``output/model``.
        scores: Folder of cached teacher scores (:func:`score_with_teacher`).
        student: The student's architecture (:class:`ranker.twinbert.TwinBertConfig` fields).
        init: A TwinBERT folder to start from instead (e.g. the shipped student, to adapt it to one collection):
            its architecture is kept, only ``student``'s ``doc_max_length`` applies.
        sets: Distillation sets trained on (:data:`DISTILL_SETS`): their cached queries only. Validation covers
            the collections (MS MARCO, SciFact) of those queries.
        loss: ``margin-mse``, ``kl`` (listwise, at ``temperature``) or ``bce`` (the paper's soft cross-entropy).
        temperature: For ``kl`` and ``bce``.
        label_weight: Weight of a label term added to the distillation loss (0: none): for each group holding a
            labelled positive (grade >= 2 by :mod:`ranker.trainset`'s mapping), cross-entropy of the student's
            softmax against gains ``2**grade - 1`` (unjudged passages gain 0).
        group_size: Candidates per query per step: half from the teacher's top ``top_pool``, half from the rest.
        top_pool: Teacher-ranked head that half of each group is drawn from.
        queries_per_step: Queries per step.
        lr: AdamW learning rate of the encoders; the pooling and crossing layers train at ``head_lr``.
        head_lr: Learning rate of pooling, projection and crossing.
        head_warmup_steps: The first steps train only pooling, projection and crossing, the encoders frozen
            (linear probing before fine-tuning): a crossing layer starting from random weights otherwise pulls
            the pretrained encoders with random gradients. Frozen steps cost about a third of a full step.
        loop: Steps, warm-up, time budget, validation and checkpoint cadence, seed.
        data: The shared data folder; validation uses the teacher's held-out DL20/DL21 queries.
        val_fraction: As the teacher's (same seed, same queries).
        val_depth: BM25 candidates reranked per validation query.
        threads: torch CPU threads.
    """

    output: str
    scores: str
    student: dict = field(default_factory=dict)
    init: str | None = None
    sets: tuple[str, ...] = DISTILL_SETS
    loss: str = "margin-mse"
    temperature: float = 1.0
    label_weight: float = 0.0
    group_size: int = 8
    top_pool: int = 10
    queries_per_step: int = 8
    lr: float = 5e-5
    head_lr: float = 1e-3
    head_warmup_steps: int = 0
    loop: LoopSettings = field(default_factory=LoopSettings)
    data: str = "../shared/data"
    val_fraction: float = 0.25
    val_depth: int = 100
    threads: int | None = 2


def sample_groups(scores: Mapping[str, tuple[list[str], np.ndarray]], qids: Sequence[str], config: DistillConfig,
                  step: int) -> tuple[list[str], list[list[str]], torch.Tensor]:
    """One step's queries, their candidate groups and the teacher's logits for them, seeded by ``(seed, step)``."""
    rng = random.Random(config.loop.step_seed(step))
    chosen, groups, targets = [], [], []
    for qid in rng.sample(list(qids), min(config.queries_per_step, len(qids))):
        docnos, logits = scores[qid]
        order = np.argsort(-logits, kind="stable")
        head, tail = list(order[:config.top_pool]), list(order[config.top_pool:]) or list(order)
        half = config.group_size // 2
        picks = [*(rng.sample(head, half) if len(head) >= half else rng.choices(head, k=half)),
                 *(rng.sample(tail, config.group_size - half) if len(tail) >= config.group_size - half
                   else rng.choices(tail, k=config.group_size - half))]
        chosen.append(qid)
        groups.append([docnos[i] for i in picks])
        targets.append([float(logits[i]) for i in picks])
    return chosen, groups, torch.tensor(targets)


def training_labels(data: str | Path) -> dict[tuple[str, str], int]:
    """``(qid, docno) -> grade`` (DL 0–3 scale) of every labelled training set, SciFact's with prefixed ids."""
    msmarco = Path(data) / "msmarco-passage"
    return {(q.qid, q.docno): q.relevance for name in (*TRAIN_SETS, "scifact-train")
            for q in graded_qrels(msmarco, name)}


def label_loss(logits: torch.Tensor, grades: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each group's softmax against its gains ``2**grade - 1`` (the teacher's
    :func:`~ranker.teacher.group_loss`), over the groups with a positive."""
    gains = torch.where(grades >= POSITIVE_GRADE, 2.0 ** grades - 1, torch.zeros_like(grades, dtype=torch.float))
    keep = gains.sum(-1) > 0
    if not keep.any():
        return logits.sum() * 0.0
    return group_loss(logits[keep], gains[keep] / gains[keep].sum(-1, keepdim=True))


def student_ranking(model, queries: Mapping[str, Query], candidates: Ranking, texts: Mapping[str, str],
                    batch_size: int = 64) -> Ranking:
    """Rerank with a TwinBERT encoding passages on the fly (no store): for validation and small sets."""
    qids = [q for q in candidates if q in queries]
    docnos = list(dict.fromkeys(d.docno for q in qids for d in candidates[q]))
    q_vecs = model.encode_queries([queries[q].text for q in qids], batch_size)
    d_vecs = model.encode_docs([texts[d] for d in docnos], batch_size)
    row = {d: i for i, d in enumerate(docnos)}
    ranking: Ranking = {}
    with torch.inference_mode():
        for i, qid in enumerate(qids):
            idx = torch.tensor([row[d.docno] for d in candidates[qid]])
            logits = model.cross(q_vecs[i].to(model.device), d_vecs[idx].to(model.device)).cpu().tolist()
            ranking[qid] = [ScoredDoc(qid, d.docno, float(s)) for d, s in zip(candidates[qid], logits)]
    return ranking


def validation_split(data: str | Path, val_fraction: float = 0.25, seed: int = 13, scifact: bool = True):
    """The teacher's held-out validation queries (DL20/DL21, and SciFact train's when ``scifact``) with texts."""
    sets = (*VALIDATION_SETS, "scifact-train") if scifact else VALIDATION_SETS
    return build_trainset(Path(data) / "msmarco-passage", sets, val_fraction, seed, scifact_candidates=SCIFACT_CANDIDATES)


class PerCollection(Reranker):
    """Each query reranked by its collection's reranker (:func:`ranker.trainset.collection_of`)."""

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


def distill(config: DistillConfig) -> Path:
    """Train a TwinBERT student on cached teacher scores; resumes from ``output/checkpoint``. Returns the fp16 folder.

    The shipped model (``output/model``) is the checkpoint with the best validation nDCG@10.
    """
    from .twinbert import TwinBert, TwinBertConfig, read_ranker_config

    if config.loss not in LOSSES:
        raise RankerError(f"unknown loss {config.loss!r}; known: {', '.join(LOSSES)}")
    if config.threads:
        torch.set_num_threads(config.threads)
    frame = read_scores(config.scores)
    frame = frame[frame["qid"].isin(set_queries(config.data, config.sets))]
    if frame.empty:
        raise RankerError(f"{config.scores}: no teacher scores for the sets {', '.join(config.sets)}")
    if config.init:
        read_ranker_config(config.init)  # a folder that is no model fails before the run folder is made
    run = TrainingRun(config.output, config.loop)
    collections = set(frame["qid"].map(collection_of))
    trainset = validation_split(config.data, config.val_fraction, config.loop.seed, scifact="scifact" in collections)
    validation, val_texts = trainset.validation.only(collections), trainset.texts
    validation.write(Path(config.output) / "validation")
    frame = frame[~frame["qid"].isin(validation.queries)]
    texts = dict(zip(frame["docno"], frame["text"]))
    queries = dict(zip(frame["qid"], frame["query"]))
    scores = {qid: (list(g["docno"]), g["score"].to_numpy()) for qid, g in frame.groupby("qid", sort=True)}
    qids = sorted(scores)

    torch.manual_seed(config.loop.seed)
    if run.resuming:
        model = TwinBert.load(run.checkpoint)
    elif config.init:
        model = TwinBert.load(config.init)
        model.config = dataclasses.replace(model.config, doc_max_length=config.student.get(
            "doc_max_length", model.config.doc_max_length))
    else:
        model = TwinBert(TwinBertConfig(**config.student))
    head = [p for n, p in model.named_parameters() if ".encoder." not in n]
    body = [p for n, p in model.named_parameters() if ".encoder." in n]
    optimizer = torch.optim.AdamW([{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}],
                                  weight_decay=0.01)
    loss_fn = LOSSES[config.loss]
    kwargs = {} if config.loss == "margin-mse" else {"temperature": config.temperature}
    labels = training_labels(config.data) if config.label_weight else {}

    def step(n: int) -> dict:
        for p in body:
            p.requires_grad_(n >= config.head_warmup_steps)
        chosen, groups, targets = sample_groups(scores, qids, config, n)
        logits = model([queries[q] for q in chosen], [[texts[d] for d in g] for g in groups])
        loss = loss_fn(logits, targets.to(logits.device), **kwargs)
        record = {"loss": round(loss.item(), 4)}
        if config.label_weight:
            grades = torch.tensor([[labels.get((q, d), 0) for d in g] for q, g in zip(chosen, groups)])
            labelled = label_loss(logits, grades.to(logits.device))
            loss = loss + config.label_weight * labelled
            record["label_loss"] = round(labelled.item(), 4)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return record

    def validate() -> dict[str, float]:
        return validation.scores(student_ranking(model, validation.queries,
                                                 cutoff(validation.candidates, config.val_depth), val_texts))

    def metadata(state: dict) -> dict:
        # the architecture trained, whether from ``student`` or from ``init``
        recorded = {**dataclasses.asdict(config), "student": dataclasses.asdict(model.config)}
        return {"config": recorded, "curve": state["curve"], "best": state["best"],
                "pairs_seen": state["step"] * config.queries_per_step * config.group_size,
                "wall_seconds": round(state["elapsed"], 1), "training_queries": len(qids)}

    def save(path: Path, dtype: torch.dtype, meta: dict) -> None:
        model.save(path, dtype)
        write_json(path / "training.json", meta)

    if not run.resuming:
        run.log({"event": "start", "queries": len(qids), "pairs": len(frame)})
    state = run.fit(model, optimizer, step, validate, save, metadata, config.queries_per_step * config.group_size)
    best = TwinBert.load(run.best)
    final = best.save(Path(config.output) / "model", torch.float16)
    write_json(final / "training.json", metadata(state))
    return final
