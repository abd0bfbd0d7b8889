"""``rank bench-serve``: closed-loop load against ``rank serve`` (started here on a loopback port, or given)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_file


def bench_serve(
    topics: Annotated[str, typer.Option(help="Topics file or irds:<id>.")],
    candidates: Annotated[Path, typer.Option(help="TREC run: each query's candidates make one request.")],
    store: Annotated[Path | None, typer.Option(help="Store to serve (starts a server here).")] = None,
    model: Annotated[str | None, typer.Option(help="Model to serve (default: the shipped twinbert).")] = None,
    url: Annotated[str | None, typer.Option(help="A running server instead (loopback only).")] = None,
    collection: Annotated[list[Path] | None, typer.Option(
        help="Passage text: also send the documents as text (matched by hash).")] = None,
    k: Annotated[int, typer.Option(min=1, help="Candidates per request.")] = 100,
    concurrency: Annotated[list[int], typer.Option(help="Clients at once (repeatable).")] = [1, 4, 16, 64],
    seconds: Annotated[float, typer.Option(min=0.5, help="Seconds per load level.")] = 10.0,
    soak: Annotated[float, typer.Option(min=0.0, help="Then this many seconds at --soak-concurrency.")] = 0.0,
    soak_concurrency: Annotated[int, typer.Option(min=1)] = 32,
    threads: Annotated[int, typer.Option(min=1, help="The server's torch threads.")] = 1,
    mixed: Annotated[int, typer.Option(
        min=0, help="Then a mixed level: 1 client in 16 sends this many texts the store lacks (0: none), the other "
                    "15 the usual requests by id; their figures apart.")] = 0,
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON.", callback=output_file)] = None,
) -> None:
    """p50/p95/p99 and requests/s per concurrency, documents by id and by text; errors counted."""
    import contextlib

    from ranker.errors import RankerError
    from ranker.io.atomic import write_json
    from ranker.io.formats import read_run
    from ranker.io.sources import load_topics
    from ranker.io.texts import texts_for
    from ranker.serve.loadtest import ServerProcess, closed_loop, mixed_loop, rerank_bodies, rss_mb, unseen_bodies
    from ranker.types import cutoff

    if (store is None) == (url is None):
        raise RankerError("give --store (a server is started here) or --url (a running server), not both")
    queries = {q.qid: q.text for q in load_topics(topics).values()}
    given = {qid: [d.docno for d in docs] for qid, docs in cutoff(read_run(candidates, known_qids=queries), k).items()}
    modes = {"id": rerank_bodies(queries, given, None)}
    if collection:
        modes["text"] = rerank_bodies(queries, given, texts_for(collection, {d for ds in given.values() for d in ds}))
    with contextlib.ExitStack() as stack:
        server = None
        if store is not None:
            options = ["--store", str(store), "--threads", str(threads), *(["--model", model] if model else [])]
            server = stack.enter_context(ServerProcess(*options))
            url = server.url
        results = []
        for mode, bodies in modes.items():
            closed_loop(url, "/v1/rerank", bodies, 1, 1.0)  # warm-up
            for level in concurrency:
                result = closed_loop(url, "/v1/rerank", bodies, level, seconds, mode)
                results.append(result)
                typer.echo(f"{mode:<4} c={level:<3} {result.requests_per_s:8.1f} req/s  p50 {result.p50_ms:7.2f}  "
                           f"p95 {result.p95_ms:7.2f}  p99 {result.p99_ms:7.2f} ms  errors {result.errors}")
        if mixed:
            heavy = unseen_bodies(queries, mixed)
            for result in mixed_loop(url, "/v1/rerank", modes["id"], heavy, 16, 1, seconds):
                results.append(result)
                typer.echo(f"{result.mode} c={result.concurrency:<3} {result.requests_per_s:8.1f} req/s  p50 "
                           f"{result.p50_ms:7.2f}  p95 {result.p95_ms:7.2f}  p99 {result.p99_ms:7.2f} ms  errors "
                           f"{result.errors}")
        soaked = None
        if soak:
            before = rss_mb(server.process.pid) if server else None
            result = closed_loop(url, "/v1/rerank", modes["id"], soak_concurrency, soak, "soak")
            after = rss_mb(server.process.pid) if server else None
            soaked = {**result.as_dict(), "rss_mb_before": before, "rss_mb_after": after}
            growth = f"{100 * (after - before) / before:+.1f}%" if server else "not measured (--url)"
            typer.echo(f"soak c={soak_concurrency} {soak:.0f} s: {result.requests} requests, {result.errors} errors, "
                       f"p99 {result.p99_ms:.1f} ms, server memory {growth}")
    failed = [r for r in [*results, *([result] if soak else [])] if r.errors]
    if failed:
        raise RankerError("the server answered errors, so no figure is reported: " + "; ".join(
            f"{r.mode} c={r.concurrency}: {r.errors} of {sum(r.statuses.values())} ({r.statuses})" for r in failed))
    if output is not None:
        write_json(output, {"k": k, "threads": threads, "seconds": seconds, "mixed": mixed,
                            "results": [r.as_dict() for r in results], "soak": soaked})
