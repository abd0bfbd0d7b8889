"""``rank bench``: p50/p95 ms per query of each reranker on the same candidates, and their ratios."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_file
from ranker.rerank.registry import RerankerConfig, reranker_names

RERANK = RerankerConfig()


def bench(
    topics: Annotated[str, typer.Option(help="Topics file or irds:<id>.")],
    candidates: Annotated[Path, typer.Option(help="TREC run whose candidates every reranker rescores.")],
    collection: Annotated[list[Path], typer.Option(help="Passage text (repeatable).")],
    reranker: Annotated[list[str], typer.Option(
        help=f"NAME or NAME=MODEL, repeatable; NAME one of {', '.join(reranker_names())}.")],
    store: Annotated[str | None, typer.Option(help="Embedding store for twinbert.")] = None,
    k: Annotated[int, typer.Option(min=1, help="Candidates per query.")] = 100,
    queries: Annotated[int | None, typer.Option(min=1, help="Benchmark only the first N queries.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Timed passes over the queries.")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed queries first.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Reranker batch size.")] = RERANK.batch_size,
    query_dtype: Annotated[str, typer.Option(
        help="twinbert query tower: float32, or bfloat16 (faster on CPUs with native bfloat16).")] = RERANK.query_dtype,
    output: Annotated[Path | None, typer.Option(
        help="Also write the results as JSON.", callback=output_file)] = None,
    reference: Annotated[str | None, typer.Option(
        help="The --reranker spec the others are compared with (default: the slowest).")] = None,
) -> None:
    """Time rerankers one query at a time in one process (same machine, same run) and print the ratios."""
    import torch

    from ranker.errors import RankerError
    from ranker.eval.bench import time_reranker
    from ranker.io.atomic import write_json
    from ranker.io.sources import load_topics
    from ranker.rerank.assembly import PipelineConfig, build_pipeline
    from ranker.types import cutoff

    torch.set_num_threads(threads)
    topics = load_topics(topics)
    results = []
    for spec in reranker:
        name, _, model = spec.partition("=")
        pipeline = build_pipeline(topics, PipelineConfig(
            reranker=name, candidates=candidates, collection=tuple(collection), k=k,
            reranker_config=RerankerConfig(model=model or None, store=store, batch_size=batch_size,
                                           query_dtype=query_dtype)))
        given = dict(list(cutoff(pipeline.candidates, k).items())[:queries])
        results.append(time_reranker(spec, pipeline.reranker, topics, given, repeats, warmup))
    by_name = {r.name: r for r in results}
    if reference is not None and reference not in by_name:
        raise RankerError(f"--reference {reference!r} is not one of the --reranker specs: {', '.join(by_name)}")
    base = by_name[reference] if reference else max(results, key=lambda r: r.p50_ms)
    for r in results:
        typer.echo(f"{r.name:<40} p50 {r.p50_ms:9.2f} ms  p95 {r.p95_ms:9.2f} ms  "
                   f"{base.p50_ms / r.p50_ms:10.1f}x faster than {base.name} (p50)  ({r.queries} queries x "
                   f"{r.repeats}, {r.candidates_per_query:.0f} candidates)")
    if output is not None:
        write_json(output, {"threads": threads, "k": k, "query_dtype": query_dtype,
                            "results": [r.as_dict() for r in results]})
