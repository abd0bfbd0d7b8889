"""``rank index``: build a Lucene index from a collection."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_folder


def index(
    collection: Annotated[str, typer.Option(help="TSV, BEIR corpus.jsonl, Pyserini JSONL, or irds:<id>.")],
    index: Annotated[Path, typer.Option(
        help="Index folder to create (an index of this project there is replaced).", callback=output_folder)],
    threads: Annotated[int, typer.Option(min=1, help="Indexing threads.")] = 2,
) -> None:
    """Index a collection with Anserini, storing raw text (contents = title + ' ' + text)."""
    from ranker.first_stage.bm25 import build_index
    from ranker.io.sources import iter_docs

    stats = build_index(iter_docs(collection), index, threads=threads, source=collection)
    skipped = f" ({stats.empty} with no text left out)" if stats.empty else ""
    typer.echo(f"indexed {stats.documents} documents{skipped} into {index} in {stats.seconds:.1f} s")
