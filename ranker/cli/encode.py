"""``rank encode``: the TwinBERT document side of every document of a collection, into an embedding store."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from typing_extensions import Annotated


class Dtype(str, Enum):
    float16 = "float16"
    int8 = "int8"


def encode(
    collection: Annotated[str, typer.Option(help="Collection file (TSV, BEIR, Pyserini JSONL) or irds:<id>.")],
    store: Annotated[Path, typer.Option(help="Store folder to create; an interrupted encode resumes.")],
    model: Annotated[str | None, typer.Option(help="TwinBERT model folder (default: models/twinbert).")] = None,
    dtype: Annotated[Dtype, typer.Option(help="float16, or int8 (1 byte a dimension).")] = Dtype.float16,
    batch_size: Annotated[int, typer.Option(min=1, help="Passages per forward pass.")] = 64,
) -> None:
    """Encode every passage once, offline; `rank run --reranker twinbert --store` then only encodes queries."""
    from ..rerankers import MODELS
    from ..sources import iter_docs
    from ..store import build_store
    from ..twinbert import TwinBert

    built = build_store(TwinBert.load(model or MODELS / "twinbert"), iter_docs(collection), store, dtype.value,
                        batch_size=batch_size)
    typer.echo(f"{len(built)} vectors ({built.dim} dims, {built.dtype}, {built.size_bytes() / 2**20:.1f} MiB) -> {store}")
