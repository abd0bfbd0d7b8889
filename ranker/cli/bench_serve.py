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
    attack: Annotated[bool, typer.Option(
        help="Then 15 clients without and with an attack: one client looping bodies costly to parse, one a 98 KB "
             "/search query (with --index), and --trickle connections sending a body a byte every 5 s.")] = False,
    trickle: Annotated[int, typer.Option(min=0, help="Trickling connections of --attack.")] = 512,
    index: Annotated[Path | None, typer.Option(help="Lucene index for the server's /search (--attack uses it).")
    ] = None,
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
            options = ["--store", str(store), "--threads", str(threads), *(["--model", model] if model else []),
                       *(["--index", str(index)] if index else [])]
            server = stack.enter_context(ServerProcess(*options))
            url = server.url
        results = []
        for mode, bodies in modes.items():
            closed_loop(url, "/v1/rerank", bodies, 1, 1.0)  # warm-up
            for level in concurrency:
                results.append(_shown(closed_loop(url, "/v1/rerank", bodies, level, seconds, mode)))
        if mixed:
            heavy = unseen_bodies(queries, mixed)
            results += map(_shown, mixed_loop(url, "/v1/rerank", modes["id"], heavy, 16, 1, seconds))
        attacked = None
        if attack:
            attacked = _attack_rounds(url, modes["id"], seconds, trickle, index is not None,
                                      server.process.pid if server else None)
            results += attacked.pop("levels")
        soaked = None
        if soak:
            before = rss_mb(server.process.pid) if server else None
            result = closed_loop(url, "/v1/rerank", modes["id"], soak_concurrency, soak, "soak")
            after = rss_mb(server.process.pid) if server else None
            soaked = {**result.as_dict(), "rss_mb_before": before, "rss_mb_after": after}
            growth = f"{100 * (after - before) / before:+.1f}%" if server else "not measured (--url)"
            typer.echo(f"soak c={soak_concurrency} {soak:.0f} s: {result.requests} requests, {result.errors} errors, "
                       f"p99 {result.p99_ms:.1f} ms, server memory {growth}")
    if output is not None:
        write_json(output, {"k": k, "threads": threads, "seconds": seconds, "mixed": mixed,
                            "results": [r.as_dict() for r in results], "soak": soaked, "attack": attacked})
    failed = [r for r in [*results, *([result] if soak else [])] if r.errors]
    if failed:
        raise RankerError("the server answered errors, so those levels have no latency figure: " + "; ".join(
            f"{r.mode} c={r.concurrency}: {r.errors} of {sum(r.statuses.values())} ({r.statuses})" for r in failed))


def _attack_rounds(url: str, bodies: list[bytes], seconds: float, trickle: int, search: bool, pid: int | None,
                   rounds: int = 2) -> dict:
    """15 ordinary clients without and with an attack (:class:`ranker.serve.loadtest.Attack`), alternating for
    ``rounds`` rounds (so that drift in the machine's speed touches both alike); the worst round's p99 ratio, what
    the attackers met, and the server's memory before and after."""
    import time

    from ranker.serve.loadtest import Attack, closed_loop, rss_mb

    levels, ratios, met, closed = [], [], {}, 0
    before = rss_mb(pid) if pid else None
    for _ in range(rounds):
        calm = _shown(closed_loop(url, "/v1/rerank", bodies, 15, seconds, "no-attack"))
        with Attack(url, trickle, search=search) as hostile:
            time.sleep(3)  # the trickling connections are all open
            under = _shown(closed_loop(url, "/v1/rerank", bodies, 15, seconds, "under-attack"))
        levels += [calm, under]
        ratios.append(under.p99_ms / calm.p99_ms)
        closed += hostile.counts.trickle_closed
        for kind, statuses in hostile.counts.statuses.items():
            for status, count in statuses.items():
                met.setdefault(kind, {})[status] = met.get(kind, {}).get(status, 0) + count
    after = rss_mb(pid) if pid else None
    typer.echo(f"attack: p99 {max(ratios):.2f}x without it at worst (rounds {', '.join(f'{r:.2f}' for r in ratios)}); "
               f"attackers answered {met}, trickling connections closed {closed} times; server memory "
               f"{before} -> {after} MB")
    return {"levels": levels, "p99_ratios": [round(r, 2) for r in ratios], "trickle": trickle, "attackers": met,
            "trickle_closed": closed, "rss_mb_before": before, "rss_mb_after": after}


def _shown(result):
    """``result`` (a :class:`ranker.serve.loadtest.LoadResult`), printed as one line: its latencies only when
    every request was answered 2xx."""
    figures = (f"{result.requests_per_s:8.1f} req/s  p50 {result.p50_ms:7.2f}  p95 {result.p95_ms:7.2f}  p99 "
               f"{result.p99_ms:7.2f} ms  errors 0" if not result.errors else
               f"errors {result.errors} of {sum(result.statuses.values())} {result.statuses}: no latency figure")
    typer.echo(f"{result.mode:<4} c={result.concurrency:<3} {figures}")
    return result
