"""``rank index``: build a Lucene index from a collection, or change one (add, delete, compact)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_folder


def index(
    index: Annotated[Path, typer.Option(
        help="Index folder to create (an index of this project there is replaced), or to change.",
        callback=output_folder)],
    collection: Annotated[str | None, typer.Option(
        help="TSV, BEIR corpus.jsonl, Pyserini JSONL, or irds:<id>: what to index (or, with --add, to add).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="Indexing threads.")] = 2,
    add: Annotated[bool, typer.Option(help="Add --collection's documents to the existing index.")] = False,
    replace: Annotated[bool, typer.Option(help="--add: index documents the index holds anew (else an error).")] = False,
    delete: Annotated[Path | None, typer.Option(help="Delete the docnos in this file (one a line).")] = None,
    compact: Annotated[bool, typer.Option(
        help="Merge into one segment, purging deleted documents from BM25's statistics.")] = False,
) -> None:
    """Index a collection with Anserini, storing raw text (contents = title + ' ' + text); or add, delete, compact."""
    from ranker.errors import RankerError
    from ranker.io.sources import iter_docs

    if add or delete or compact:
        from ranker.first_stage import index_edit
        from ranker.io.formats import read_ids

        if add and collection is None:
            raise RankerError("--add needs --collection FILE")
        ids = read_ids(delete) if delete else []  # read first: a bad file changes nothing
        count = None
        if add:  # with --delete: one commit
            count = index_edit.add_to_index(iter_docs(collection), index, replace=replace, threads=threads,
                                            delete=ids)
        elif delete:
            count = index_edit.delete_from_index(index, ids)
        if compact:
            count = index_edit.compact_index(index)
        typer.echo(f"{index}: {count} documents")
        return
    if collection is None:
        raise RankerError("give --collection FILE to index")
    from ranker.first_stage.bm25 import build_index

    stats = build_index(iter_docs(collection), index, threads=threads, source=collection)
    skipped = f" ({stats.empty} with no text left out)" if stats.empty else ""
    typer.echo(f"indexed {stats.documents} documents{skipped} into {index} in {stats.seconds:.1f} s")
