"""Pipelines from their parts: a first stage (BM25 over an index, or a given run), passage text, a reranker.

``rank run`` and ``rank bench`` (and any Python caller) build their pipelines here, so both rank with the same
parts and the same defaults::

    pipeline = build_pipeline(load_topics("dl19.tsv"), PipelineConfig(candidates="bm25.trec",
                              collection=("passages.tsv",), reranker="cross-encoder"))
    ranking = pipeline.run()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from ranker.errors import RankerError
from ranker.first_stage.bm25 import Bm25Config
from ranker.io.formats import read_run
from ranker.io.texts import TextSource, texts_for
from ranker.pipeline import Reranker, Stage
from ranker.rerank.registry import RerankerConfig, make_reranker
from ranker.types import Query, Ranking


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
    """

    reranker: str | None = None
    reranker_config: RerankerConfig = field(default_factory=RerankerConfig)
    index: str | Path | None = None
    candidates: str | Path | None = None
    collection: Sequence[str | Path] = ()
    k: int = 100
    bm25: Bm25Config = field(default_factory=Bm25Config)


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


def build_pipeline(queries: Mapping[str, Query], config: PipelineConfig) -> Pipeline:
    """BM25 (``config.index``) or given candidates, then the reranker cut to the top ``config.k``.

    With candidates, queries without any are left out.

    Raises:
        RankerError: Neither an index nor candidates; a candidate query not among ``queries``.
    """
    queries = dict(queries)
    retriever = None
    if config.index is not None:
        from ranker.first_stage.bm25 import Bm25Retriever

        retriever = Bm25Retriever(config.index, replace(config.bm25, k=config.k))
    given = None
    if config.candidates is not None:
        given = read_run(config.candidates, known_qids=queries)
        queries = {qid: q for qid, q in queries.items() if qid in given}
        if retriever is not None:  # candidates with an index: every one must be a document of it
            missing = retriever.missing(dict.fromkeys(d.docno for docs in given.values() for d in docs))
            if missing:
                raise RankerError(f"{config.candidates}: {len(missing)} candidate(s) are not in the index "
                                  f"{config.index}: {', '.join(missing[:5])}")
    elif retriever is None:
        raise RankerError("give --index (BM25 retrieval) or --candidates (rerank a run)")
    name = config.reranker
    if name is None and config.reranker_config.model is None and given is not None:
        name = "identity"
    reranker = None
    if name is not None or config.reranker_config.model is not None:
        texts = passage_texts(config.collection, given, retriever)
        reranker = make_reranker(name, replace(config.reranker_config, texts=texts))
    if reranker is None:
        stage = retriever
    elif given is None:
        stage = retriever >> reranker % config.k
    else:
        stage = reranker % config.k
    return Pipeline(stage, queries, given, reranker)
