"""``rank run``: BM25 retrieval, or reranking of an existing run, written as a TREC run with a JSON sidecar."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from typing_extensions import Annotated

from ..errors import RankerError


def run(
    topics: Annotated[str, typer.Option(help="Topics: TSV 'qid<TAB>text', BEIR queries.jsonl, or irds:<id>.")],
    output: Annotated[Path, typer.Option(help="TREC run file to write (a .json sidecar goes beside it).")],
    index: Annotated[Path | None, typer.Option(help="Lucene index folder (BM25 first stage).")] = None,
    candidates: Annotated[Path | None, typer.Option(help="Rerank this TREC run instead of retrieving.")] = None,
    reranker: Annotated[str | None, typer.Option(help="Reranker applied to the candidates.")] = None,
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
    from ..pipeline import Cutoff, make_reranker
    from ..runs import save_run, timing
    from ..sources import load_qrels, load_topics

    queries = load_topics(topics)
    if judged_only:
        judged = {q.qid for q in load_qrels(judged_only)}
        queries = {qid: q for qid, q in queries.items() if qid in judged}
    if not queries:
        raise RankerError(f"{topics}: no queries to run")
    metadata: dict = {"topics": topics, "judged_only": judged_only, "k": k}
    if candidates is not None:
        given = read_run(candidates, known_qids=queries)
        queries = {qid: q for qid, q in queries.items() if qid in given}
        stage = make_reranker(reranker or "identity") % k
        metadata["candidates"] = str(candidates)
    else:
        if index is None:
            raise RankerError("give --index (BM25 retrieval) or --candidates (rerank a run)")
        from ..bm25 import Bm25Params, Bm25Retriever

        stage = Bm25Retriever(index, Bm25Params(k1=k1, b=b, k=k, threads=threads, remove_query_id=remove_query_id))
        if reranker is not None:
            stage = stage >> make_reranker(reranker) % k
        given = None
    start = time.perf_counter()
    ranking = stage(queries, given)
    seconds = time.perf_counter() - start
    metadata |= {"pipeline": stage.config(), "timing": timing(seconds, len(queries))}
    save_run(ranking, output, tag or output.stem, metadata)
    typer.echo(f"{stage.name}: {len(queries)} queries, {metadata['timing']['ms_per_query']:.1f} ms/query "
               f"-> {output}")
