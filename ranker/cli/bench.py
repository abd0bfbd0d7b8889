"""``rank bench``: p50/p95 ms per query of each reranker on the same candidates, and their ratios."""

from __future__ import annotations

from pathlib import Path

import typer
from typing_extensions import Annotated


def bench(
    topics: Annotated[str, typer.Option(help="Topics file or irds:<id>.")],
    candidates: Annotated[Path, typer.Option(help="TREC run whose candidates every reranker rescores.")],
    collection: Annotated[list[Path], typer.Option(help="Passage text (repeatable).")],
    reranker: Annotated[list[str], typer.Option(help="NAME or NAME=MODEL, repeatable, e.g. teacher, twinbert.")],
    store: Annotated[str | None, typer.Option(help="Embedding store for twinbert.")] = None,
    k: Annotated[int, typer.Option(min=1, help="Candidates per query.")] = 100,
    queries: Annotated[int | None, typer.Option(min=1, help="Benchmark only the first N queries.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch CPU threads.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Timed passes over the queries.")] = 3,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed queries first.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Reranker batch size.")] = 128,
    query_dtype: Annotated[str, typer.Option(
        help="twinbert query tower: float32, or bfloat16 (faster on CPUs with native bfloat16).")] = "float32",
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON.")] = None,
    reference: Annotated[str | None, typer.Option(
        help="The --reranker spec the others are compared with (default: the slowest).")] = None,
) -> None:
    """Time rerankers one query at a time in one process (same machine, same run) and print the ratios."""
    import torch

    from ..bench import time_reranker
    from ..errors import RankerError
    from ..formats import read_run
    from ..io import write_json
    from ..rerankers import RerankerOptions, make_reranker
    from ..sources import load_topics
    from ..textsource import texts_for
    from ..types import cutoff

    torch.set_num_threads(threads)
    topics = load_topics(topics)
    given = cutoff(read_run(candidates, known_qids=topics), k)
    if queries:
        given = dict(list(given.items())[:queries])
    texts = texts_for(collection, {d.docno for docs in given.values() for d in docs})
    results = []
    for spec in reranker:
        name, _, model = spec.partition("=")
        stage = make_reranker(name, RerankerOptions(model=model or None, texts=texts, store=store,
                                                    batch_size=batch_size, query_dtype=query_dtype))
        results.append(time_reranker(spec, stage, topics, given, repeats, warmup))
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
