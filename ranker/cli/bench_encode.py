"""``rank bench-encode``: a bi-encoder's passages per second on each backend, over the same passages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_file


def bench_encode(
    collection: Annotated[str | None, typer.Option(
        help="Collection file (TSV, BEIR, Pyserini JSONL) or irds:<id>: its passages are timed.")] = None,
    topics: Annotated[str | None, typer.Option(help="Or a topics file: its queries are timed.")] = None,
    model: Annotated[str, typer.Option(help="The bi-encoder: minilm, mpnet or a folder.")] = "mpnet",
    backend: Annotated[list[str] | None, typer.Option(
        help="Backends to time, repeatable (torch, onnx, and for --topics onnx-int8); cosines are to the first. "
             "Default: torch, onnx.")] = None,
    passages: Annotated[int, typer.Option(min=1, help="Texts timed (the file's first N).")] = 512,
    batch_size: Annotated[int, typer.Option(min=1, help="Passages per forward pass.")] = 16,
    threads: Annotated[int, typer.Option(min=1, help="torch and ONNX Runtime CPU threads.")] = 2,
    output: Annotated[Path | None, typer.Option(help="Also write the results as JSON.", callback=output_file)] = None,
) -> None:
    """Encode the same passages on each backend in one process: passages/s, agreement with the first backend, and
    the process's peak memory while each backend ran."""
    import itertools

    import torch

    from ranker.cpu import cpu_info
    from ranker.errors import RankerError
    from ranker.eval.bench import encode_throughput
    from ranker.io.atomic import write_json
    from ranker.io.sources import iter_docs, load_topics

    if (collection is None) == (topics is None):
        raise RankerError("give --collection (passages) or --topics (queries), one of them")
    if collection is not None and "onnx-int8" in (backend or []):
        raise RankerError("onnx-int8 encodes queries only: time it with --topics")
    torch.set_num_threads(threads)
    texts = ([doc.contents for doc in itertools.islice(iter_docs(collection), passages)] if collection else
             [q.text for q in itertools.islice(load_topics(topics).values(), passages)])
    results = encode_throughput(model, texts, backend or ["torch", "onnx"], batch_size)
    for r in results:
        typer.echo(f"{model} [{r['backend']}]: {r['passages_per_s']:.2f} texts/s ({r['passages']} in "
                   f"{r['seconds']:.1f} s, {threads} threads); cosine to [{results[0]['backend']}] mean "
                   f"{r['mean_cosine_to_first']:.6f}, min {r['min_cosine_to_first']:.6f}; peak memory "
                   f"{r['peak_rss_mb']} MB")
    if output is not None:
        write_json(output, {"model": model, "threads": threads, "batch_size": batch_size, "cpu": cpu_info(),
                            "results": results})
