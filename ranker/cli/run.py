"""``rank run``: BM25 retrieval, or reranking of an existing run, written as a TREC run with a JSON sidecar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from typing_extensions import Annotated

from ..errors import RankerError

if TYPE_CHECKING:
    from ..bm25 import Bm25Retriever
    from ..pipeline import Reranker
    from ..types import Ranking


def run(
    topics: Annotated[str, typer.Option(help="Topics: TSV 'qid<TAB>text', BEIR queries.jsonl, or irds:<id>.")],
    output: Annotated[Path, typer.Option(help="TREC run file to write (a .json sidecar goes beside it).")],
    index: Annotated[Path | None, typer.Option(help="Lucene index folder (BM25 first stage; stored text).")] = None,
    candidates: Annotated[Path | None, typer.Option(help="Rerank this TREC run instead of retrieving.")] = None,
    reranker: Annotated[str | None, typer.Option(help="identity, teacher, biencoder, twinbert.")] = None,
    model: Annotated[str | None, typer.Option(help="Reranker model folder or HF name (default: shipped).")] = None,
    collection: Annotated[list[Path] | None, typer.Option(help="Passage text for reranking (repeatable).")] = None,
    store: Annotated[str | None, typer.Option(help="Embedding store of the twinbert reranker.")] = None,
    encode_missing: Annotated[bool, typer.Option(help="twinbert: encode candidates absent from the store.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Reranker batch size.")] = 32,
    query_dtype: Annotated[str, typer.Option(
        help="twinbert query tower: float32, or bfloat16 (faster on CPUs with native bfloat16).")] = "float32",
    k: Annotated[int, typer.Option(min=1, help="Documents kept per query.")] = 100,
    k1: Annotated[float, typer.Option(help="BM25 k1.")] = 0.9,
    b: Annotated[float, typer.Option(help="BM25 b.")] = 0.4,
    threads: Annotated[int, typer.Option(min=1, help="Search threads.")] = 2,
    remove_query_id: Annotated[bool, typer.Option(help="Drop hits whose docid equals the query id (BEIR).")] = False,
    judged_only: Annotated[str | None, typer.Option(help="Keep only the topics judged in this qrels file.")] = None,
    tag: Annotated[str | None, typer.Option(help="Run tag (default: the output file's stem).")] = None,
) -> None:
    """Retrieve with BM25 (--index) or rerank --candidates, and write runs/NAME.trec plus NAME.trec.json."""
    from ..formats import read_run
    from ..runs import save_run, timing
    from ..sources import load_qrels, load_topics

    queries = load_topics(topics)
    if judged_only:
        judged = {q.qid for q in load_qrels(judged_only)}
        queries = {qid: q for qid, q in queries.items() if qid in judged}
    if not queries:
        raise RankerError(f"{topics}: no queries to run")
    metadata: dict = {"topics": topics, "judged_only": judged_only, "k": k,
                      "collection": [str(c) for c in collection or []]}
    retriever = None
    if index is not None:
        from ..bm25 import Bm25Params, Bm25Retriever

        retriever = Bm25Retriever(index, Bm25Params(k1=k1, b=b, k=k, threads=threads, remove_query_id=remove_query_id))
    given = None
    if candidates is not None:
        given = read_run(candidates, known_qids=queries)
        queries = {qid: q for qid, q in queries.items() if qid in given}
        metadata["candidates"] = str(candidates)
    elif retriever is None:
        raise RankerError("give --index (BM25 retrieval) or --candidates (rerank a run)")
    options = dict(model=model, store=store, encode_missing=encode_missing, batch_size=batch_size,
                   query_dtype=query_dtype)
    rerank = None
    if given is not None or reranker is not None:
        rerank = _reranker(reranker or "identity", collection, retriever, given, options)
    if rerank is None:
        stage = retriever
    elif given is None:
        stage = retriever >> rerank % k
    else:
        stage = rerank % k
    start = time.perf_counter()
    ranking = stage(queries, given)
    seconds = time.perf_counter() - start
    metadata |= {"pipeline": stage.config(), "timing": timing(seconds, len(queries))}
    if getattr(rerank, "timing", None):  # a reranker that splits its latency (twinbert)
        metadata["timing"]["reranker_ms_per_query"] = {
            part: round(1000 * s / max(len(queries), 1), 3) for part, s in rerank.timing.items()}
    save_run(ranking, output, tag or output.stem, metadata)
    typer.echo(f"{stage.name}: {len(queries)} queries, {metadata['timing']['ms_per_query']:.1f} ms/query "
               f"-> {output}")


def _reranker(name: str, collection: list[Path] | None, retriever: Bm25Retriever | None,
              candidates: Ranking | None, options: dict) -> Reranker:
    """The named reranker, with passage text from --collection (only the candidates' docnos) or the index."""
    from ..rerankers import RerankerOptions, make_reranker
    from ..textsource import TextSource, texts_for

    texts = None
    if collection:
        texts = texts_for(collection, {d.docno for ds in candidates.values() for d in ds}) if candidates else \
            TextSource(collection)
    elif retriever is not None:
        texts = retriever.texts()
    return make_reranker(name, RerankerOptions(texts=texts, **options))
