"""``rank bench``: p50/p95 ms per query of each reranker on the same candidates, their ratios, and the floor."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli import options
from ranker.cli.options import output_file
from ranker.models.config import QUERY_BACKENDS
from ranker.rerank.registry import RerankerConfig, reranker_names

RERANK = RerankerConfig()
STORE_USERS = ("twinbert",)
"""The specs --store goes to; any other spec that needs a store names its own (NAME=MODEL@STORE)."""


def bench(
    topics: Annotated[str, typer.Option(help="Topics file or irds:<id>.")],
    candidates: Annotated[Path, typer.Option(help="TREC run whose candidates every reranker rescores.")],
    collection: Annotated[list[Path], typer.Option(help="Passage text (repeatable).")],
    reranker: Annotated[list[str], typer.Option(
        help=f"NAME, NAME=MODEL or NAME=MODEL@STORE, repeatable; NAME one of {', '.join(reranker_names())}. "
             "@STORE: that reranker's embedding store instead of --store (a bi-encoder's, a peer's). "
             "biencoder[BACKEND]: the bi-encoder's query side on torch, onnx or onnx-int8.")],
    store: Annotated[str | None, typer.Option(help="Embedding store for twinbert.")] = None,
    query_backend: Annotated[list[str] | None, typer.Option(
        help=f"twinbert's query backends to time, repeatable ({', '.join(QUERY_BACKENDS)}); default: the "
             "default backend. Each twinbert spec runs once per backend, named twinbert[BACKEND].",
        callback=lambda names: [options.query_backend(n) for n in names or []])] = None,
    fusion: Annotated[list[str] | None, typer.Option(
        help="twinbert: bm25 (fused with the candidates' BM25 scores, as rank run by default) and/or none (the "
             "student alone), repeatable: each is timed.")] = None,
    query_max_length: Annotated[list[int] | None, typer.Option(
        min=4, help="twinbert: query caps to time, repeatable (default: the model's own).")] = None,
    k: Annotated[int, typer.Option(min=1, help="Candidates per query.")] = 100,
    queries: Annotated[int | None, typer.Option(min=1, help="Benchmark only the first N queries.")] = None,
    threads: Annotated[int, typer.Option(min=1, help="torch (and ONNX Runtime) CPU threads.")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Timed passes over the queries.")] = 3,
    budget: Annotated[float | None, typer.Option(
        min=0.0, help="Seconds after which a reranker's timing stops, at any query once --min-queries are "
                      "timed (a cross-encoder takes seconds a query).")] = None,
    min_queries: Annotated[int, typer.Option(min=1, help="Queries timed before --budget can stop a reranker.")] = 10,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed queries first.")] = 3,
    batch_size: Annotated[int, typer.Option(min=1, help="Reranker batch size.")] = RERANK.batch_size,
    output: Annotated[Path | None, typer.Option(
        help="Also write the results as JSON.", callback=output_file)] = None,
    reference: Annotated[str | None, typer.Option(
        help="The result name the others are compared with (default: the slowest).")] = None,
) -> None:
    """Time rerankers one query at a time in one process (same machine, same run), print their ratios and, for
    twinbert, the float32 floor of its query encoding on this CPU."""
    import itertools
    import statistics

    import torch

    from ranker.cpu import cpu_info
    from ranker.errors import RankerError
    from ranker.eval.bench import time_reranker
    from ranker.eval.floor import query_floor
    from ranker.io.atomic import write_json
    from ranker.io.sources import load_topics
    from ranker.rerank.assembly import PipelineConfig, build_pipeline
    from ranker.rerank.fused import FusedReranker, FusionConfig
    from ranker.types import cutoff

    torch.set_num_threads(threads)
    topics = load_topics(topics)
    results, student = [], None
    for spec in reranker:
        head, _, spec_store = spec.partition("@")
        name, _, model = head.partition("=")
        name, _, biencoder_backend = name.removesuffix("]").partition("[")
        if biencoder_backend and name != "biencoder":
            raise RankerError(f"--reranker {spec!r}: a [BACKEND] is for biencoder (twinbert's: --query-backend)")
        student_settings = itertools.product(query_backend or [RERANK.query_backend], fusion or [FusionConfig.kind],
                                             query_max_length or [None])
        for backend, fused, cap in student_settings if name == "twinbert" else [(None, "none", None)]:
            pipeline = build_pipeline(topics, PipelineConfig(
                reranker=name, candidates=candidates, collection=tuple(collection), k=k, fusion=FusionConfig(fused),
                reranker_config=RerankerConfig(model=model or None, batch_size=batch_size,
                                               store=spec_store or (store if name in STORE_USERS else None),
                                               query_backend=backend or RERANK.query_backend, query_max_length=cap,
                                               biencoder_backend=biencoder_backend or RERANK.biencoder_backend)))
            given = dict(list(cutoff(pipeline.candidates, k).items())[:queries])
            label = f"{head}{'@store' if spec_store else ''}"  # the store's path differs between machines
            label += f"[{backend}]" if backend else ""  # as asked: a fallback is recorded as what ran
            label += f"+bm25 w={pipeline.reranker.weight}" if isinstance(pipeline.reranker, FusedReranker) else ""
            label += f" q{cap}" if cap else ""
            student = student or (pipeline.reranker if backend else None)
            timed = time_reranker(label, pipeline.reranker, topics, given, repeats, warmup, budget, min_queries)
            ran = pipeline.reranker.query_encoder.backend if backend else None
            results.append(dataclasses.replace(timed, ran=ran) if ran and ran != backend else timed)
            del pipeline
    by_name = {r.name: r for r in results}
    if reference is not None and reference not in by_name:
        raise RankerError(f"--reference {reference!r} is not one of the results: {', '.join(by_name)}")
    base = by_name[reference] if reference else max(results, key=lambda r: r.p50_ms)
    floor = None
    if student is not None:
        lengths = [len(ids) for ids in student.model.query_tower.tokenizer(
            [topics[q].text for q in given], truncation=True, max_length=student.model.config.query_max_length)[
            "input_ids"]]
        floor = query_floor(student.model.query_tower.encoder.config, round(statistics.median(lengths)), threads)
    for r in results:
        student_row = r.name.startswith("twinbert") and "[" in r.name
        vs_floor = f"  {r.p50_ms / floor.floor_ms:5.2f}x floor" if floor and student_row else ""
        typer.echo(f"{r.name:<44} p50 {r.p50_ms:9.2f} ms  p95 {r.p95_ms:9.2f} ms  "
                   f"{base.p50_ms / r.p50_ms:10.1f}x faster than {base.name} (p50)  ({r.queries} queries x "
                   f"{r.repeats}, {r.candidates_per_query:.0f} candidates){vs_floor}")
    if floor is not None:
        typer.echo(f"floor: {floor.mflops:.0f} MFLOP per query ({floor.layers} layers x {floor.hidden}, "
                   f"median {floor.tokens} tokens) at {floor.gflops_per_s:.0f} GFLOP/s float32 matmul on "
                   f"{threads} thread(s) = {floor.floor_ms:.2f} ms")
    ratios = {r.name: {o.name: round(o.p50_ms / r.p50_ms, 3) for o in results} for r in results}
    if output is not None:
        write_json(output, {"threads": threads, "k": k, "cpu": cpu_info(), "results": [r.as_dict() for r in results],
                            "p50_ratios": ratios, "floor": floor.as_dict() if floor else None})
