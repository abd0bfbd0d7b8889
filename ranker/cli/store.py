"""``rank store``: an embedding store's life, one verb each (build, add, delete, compact, merge); ``rank encode``
keeps every mode as options of one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.encode import Backend, Dtype, Encoder, encode
from ranker.cli.options import output_folder

app = typer.Typer(help="Build and edit embedding stores: build, add, delete, compact, merge.", no_args_is_help=True)

STORE = typer.Option(help="The store folder.")
MODEL = typer.Option(help="TwinBERT folder (default: models/twinbert), or the bi-encoder's (minilm, mpnet, a folder).")
ENCODER = typer.Option(help="twinbert: the student's document tower; biencoder: a sentence-transformers model.")


@app.command("build")
def build(
    store: Annotated[Path, typer.Option(help="Store folder to create; an interrupted build resumes.",
                                        callback=output_folder)],
    collection: Annotated[list[str], typer.Option(help="Collection file or irds:<id>; repeatable.")],
    model: Annotated[str | None, MODEL] = None,
    encoder: Annotated[Encoder, ENCODER] = Encoder.twinbert,
    backend: Annotated[Backend, typer.Option(help="--encoder biencoder: torch or onnx.")] = Backend.torch,
    dtype: Annotated[Dtype, typer.Option(help="float16, or int8 (1 byte a dimension).")] = Dtype.float16,
    candidates: Annotated[Path | None, typer.Option(help="Only the passages this TREC run ranks.")] = None,
    shard: Annotated[str | None, typer.Option(help="I/N: shard I of N into a partial store (then merge).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Passages per forward pass.")] = 64,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
) -> None:
    """Encode every passage of the collections once, offline (the same as `rank encode`)."""
    from ranker.cli.options import parse_shard

    encode(store=store, collection=collection, model=model, encoder=encoder, backend=backend, dtype=dtype,
           candidates=candidates, shard=parse_shard(shard), batch_size=batch_size, threads=threads)


@app.command("add")
def add(
    store: Annotated[Path, STORE],
    collection: Annotated[list[str], typer.Option(help="The documents to add (collection file or irds:<id>).")],
    model: Annotated[str | None, MODEL] = None,
    encoder: Annotated[Encoder, ENCODER] = Encoder.twinbert,
    replace: Annotated[bool, typer.Option(help="Re-encode documents the store holds (else an error).")] = False,
) -> None:
    """Encode documents into an existing store."""
    encode(store=store, collection=collection, model=model, encoder=encoder, add=True, replace=replace)


@app.command("delete")
def delete(
    store: Annotated[Path, STORE],
    docnos: Annotated[Path, typer.Option(help="File of the docnos to delete, one a line.")],
) -> None:
    """Tombstone documents in a store (compact reclaims their rows)."""
    encode(store=store, delete=docnos)


@app.command("compact")
def compact(store: Annotated[Path, STORE]) -> None:
    """Rewrite a store without its tombstoned rows."""
    encode(store=store, compact=True)


@app.command("merge")
def merge(
    store: Annotated[Path, typer.Option(help="The store to create from the shards.", callback=output_folder)],
    shards: Annotated[list[Path], typer.Argument(help="Every shard of one build, once.")],
) -> None:
    """Join the shards of a sharded build into the store a single build makes."""
    encode(store=store, merge=shards)
