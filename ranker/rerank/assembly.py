"""Pipelines from their parts: a first stage (BM25 over an index, or a given run), passage text, a reranker.

``rank run`` and ``rank bench`` (and any Python caller) build their pipelines here, so both rank with the same
parts and the same defaults::

    pipeline = build_pipeline(load_topics("dl19.tsv"), PipelineConfig(candidates="bm25.trec",
                              collection=("passages.tsv",), reranker="cross-encoder"))
    ranking = pipeline.run()
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ranker.errors import RankerError
from ranker.first_stage.bm25 import Bm25Config
from ranker.io.formats import read_run
from ranker.io.texts import TextSource, texts_for
from ranker.pipeline import Reranker, Stage
from ranker.rerank.fused import FusionConfig
from ranker.rerank.registry import RerankerConfig, make_reranker
from ranker.types import Query, Ranking


@dataclass(frozen=True)
class DenseConfig:
    """Dense first stage: the store, the model that built it (default the shipped student), exact or HNSW
    search, and for ``hybrid`` the dense side's weight (``None``: the student's own fusion weight, the one its
    reranking is fused with: :func:`ranker.rerank.fused.model_weight`)."""

    store: str | Path | None = None
    model: str | None = None
    search: str = "exact"
    ef_search: int = 256
    hybrid_weight: float | None = None


RETRIEVERS = ("bm25", "dense", "hybrid")


@dataclass(frozen=True)
class PipelineConfig:
    """A pipeline's parts.

    Attributes:
        reranker: Registry name (:mod:`ranker.rerank.registry`); ``None``: the kind ``reranker_config.model``
            names, else none (BM25 alone), or ``identity`` over given candidates.
        reranker_config: The reranker's model, store, batch size…
        index: Lucene index: BM25 first stage, and passage text when no ``collection`` is given.
        candidates: TREC run to rerank instead of retrieving.
        collection: Collection files holding the candidates' text.
        k: Documents kept per query (BM25's depth too).
        bm25: BM25 settings (its ``k`` is replaced by ``k``).
        retriever: The first stage over ``index``: ``bm25``; ``dense`` (nearest neighbours in ``dense``'s store,
            no index needed) or ``hybrid`` (both fused, :mod:`ranker.first_stage.dense`).
        dense: The dense retriever's settings.
        fusion: How a student reranker's scores are fused with BM25's (:mod:`ranker.rerank.fused`).
        known_qids: Every query of the topics file when the queries ranked are a subset of it (``--queries N``,
            ``--qids``, ``--judged-only``): ``candidates`` may name any of them (those not ranked are skipped);
            ``None``: the queries ranked.
    """

    reranker: str | None = None
    reranker_config: RerankerConfig = field(default_factory=RerankerConfig)
    index: str | Path | None = None
    candidates: str | Path | None = None
    collection: Sequence[str | Path] = ()
    k: int = 100
    bm25: Bm25Config = field(default_factory=Bm25Config)
    retriever: str = "bm25"
    dense: DenseConfig = field(default_factory=DenseConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    known_qids: Collection[str] | None = None


@dataclass
class Pipeline:
    """An assembled pipeline: its stage, the queries it ranks, the candidates it was given (if any)."""

    stage: Stage
    queries: dict[str, Query]
    candidates: Ranking | None = None
    reranker: Reranker | None = None

    def run(self) -> Ranking:
        return self.stage(self.queries, self.candidates)


def passage_texts(collection: Sequence[str | Path], candidates: Ranking | None = None,
                  retriever=None) -> Mapping[str, str] | None:
    """Text for rerankers: from ``collection`` (only the candidates' docnos, when candidates are known), else
    from the index ``retriever`` stores, else ``None``."""
    if collection:
        if candidates is None:
            return TextSource(collection)
        return texts_for(collection, {d.docno for docs in candidates.values() for d in docs})
    return retriever.texts() if retriever is not None else None


def shared_student(reranker: str | None, config: PipelineConfig, dense: Stage | None):
    """The dense first stage's open student when the twinbert reranker after it would load the same model over the
    same store with the same query settings: one model, one store, one query encoder for both stages."""
    r = config.reranker_config
    if reranker != "twinbert" or getattr(dense, "student", None) is None or r.query_max_length:
        return None
    same = (r.model == config.dense.model and r.store == config.dense.store)
    return dense.student if same else None


def fused_with_bm25(reranker: Reranker, config: PipelineConfig, index: Stage | None, first: Stage | None) -> Reranker:
    """A student reranker fused with BM25 (``config.fusion``); any other reranker, or ``--fusion none``, as it is.

    BM25's scores are the candidates' own when BM25 (or a given run) produced them, else computed from ``index``.
    After a hybrid first stage over the same student at the same weight, the candidates' scores already are the
    fusion (:class:`ranker.rerank.fused.AlreadyFused`).
    """
    from ranker.rerank.twinbert import TwinBertReranker

    if config.fusion.kind == "none" or not isinstance(reranker, TwinBertReranker):
        return reranker
    from ranker.first_stage.dense import HybridRetriever
    from ranker.rerank.fused import AlreadyFused, FusedReranker, LexicalScores, model_weight

    weight = model_weight(reranker.model.path) if config.fusion.weight is None else config.fusion.weight
    if isinstance(first, HybridRetriever) and first.dense.student is reranker.student and first.weight == weight:
        return AlreadyFused(reranker, weight)
    first_stage_bm25 = config.candidates is not None or config.retriever == "bm25"
    lexical = LexicalScores("first-stage") if first_stage_bm25 else LexicalScores("index", index)
    return FusedReranker(reranker, lexical, weight)


def build_pipeline(queries: Mapping[str, Query], config: PipelineConfig) -> Pipeline:
    """BM25 (``config.index``) or given candidates, then the reranker cut to the top ``config.k``.

    With candidates, queries without any are left out.

    Raises:
        RankerError: Neither an index nor candidates; a candidate query not among ``queries``.
    """
    queries = dict(queries)
    retriever = first = dense = None
    if config.retriever not in RETRIEVERS:
        raise RankerError(f"retriever must be one of {', '.join(RETRIEVERS)}, not {config.retriever!r}")
    if config.retriever != "bm25" and config.candidates is not None:
        raise RankerError(f"--retriever {config.retriever} retrieves and --candidates reranks a given run: give one")
    if config.retriever == "bm25" and replace(config.dense, store=None) != DenseConfig():
        raise RankerError("--dense-model, --search, --ef-search and --hybrid-weight set the dense or hybrid "
                          "retriever: add --retriever dense or hybrid, or leave them out")
    if config.index is not None or config.retriever == "hybrid":
        from ranker.first_stage.bm25 import Bm25Retriever

        if config.index is None:
            raise RankerError("the hybrid retriever needs a BM25 index: give --index DIR")
        retriever = first = Bm25Retriever(config.index, replace(config.bm25, k=config.k))
    if config.retriever != "bm25":
        from ranker.first_stage.dense import DenseRetriever, HybridRetriever

        if config.dense.store is None:
            raise RankerError(f"the {config.retriever} retriever needs an embedding store: give --store DIR")
        dense = DenseRetriever(config.dense.store, config.dense.model, config.dense.search, config.k,
                               config.reranker_config.query_backend, config.dense.ef_search)
        if config.retriever == "dense":
            first = dense
        else:
            from ranker.rerank.fused import model_weight

            weight = config.dense.hybrid_weight
            student = dense.student.model.path if dense.student is not None else None
            first = HybridRetriever(retriever, dense, model_weight(student) if weight is None else weight, config.k)
    given = None
    if config.candidates is not None:
        given = read_run(config.candidates, known_qids=queries if config.known_qids is None else config.known_qids)
        given = {qid: docs for qid, docs in given.items() if qid in queries}
        queries = {qid: q for qid, q in queries.items() if qid in given}
        if retriever is not None:  # candidates with an index: every one must be a document of it
            missing = retriever.missing(dict.fromkeys(d.docno for docs in given.values() for d in docs))
            if missing:
                raise RankerError(f"{config.candidates}: {len(missing)} candidate(s) are not in the index "
                                  f"{config.index}: {', '.join(missing[:5])}")
    elif first is None:
        raise RankerError("give --index (BM25 retrieval), --retriever dense --store, or --candidates (rerank a run)")
    name = config.reranker
    if name is None and config.reranker_config.model is None and given is not None:
        name = "identity"
    reranker = None
    if name is not None or config.reranker_config.model is not None:
        texts = passage_texts(config.collection, given, retriever)
        reranker = make_reranker(name, replace(config.reranker_config, texts=texts,
                                               student=shared_student(name, config, dense)))
        reranker = fused_with_bm25(reranker, config, retriever if given is None else None, first)
    if reranker is None:
        stage = first
    elif given is None:
        stage = first >> reranker % config.k
    else:
        stage = reranker % config.k
    return Pipeline(stage, queries, given, reranker)
