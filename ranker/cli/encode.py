"""``rank encode``: the TwinBERT document side (or a bi-encoder) of every document of a collection, into an
embedding store."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_folder


class Encoder(str, Enum):
    twinbert = "twinbert"
    biencoder = "biencoder"


class Dtype(str, Enum):
    float16 = "float16"
    int8 = "int8"


def encode(
    store: Annotated[Path, typer.Option(
        help="Store folder to create; an interrupted encode resumes.", callback=output_folder)],
    collection: Annotated[str | None, typer.Option(
        help="Collection file (TSV, BEIR, Pyserini JSONL) or irds:<id>.")] = None,
    model: Annotated[str | None, typer.Option(
        help="TwinBERT folder (default: models/twinbert), or the bi-encoder's (minilm, mpnet, a folder).")] = None,
    encoder: Annotated[Encoder, typer.Option(
        help="twinbert: the student's document tower; biencoder: a sentence-transformers model (mean pooling, "
             "unit vectors) for `--reranker biencoder --store` and `sentence-transformers`.")] = Encoder.twinbert,
    dtype: Annotated[Dtype, typer.Option(help="float16, or int8 (1 byte a dimension).")] = Dtype.float16,
    batch_size: Annotated[int, typer.Option(min=1, help="Passages per forward pass.")] = 64,
    from_store: Annotated[Path | None, typer.Option(
        help="Re-quantize this store of the same model instead of encoding (--collection is then unused).")] = None,
    candidates: Annotated[Path | None, typer.Option(
        help="Encode only the passages this TREC run ranks (a store for a fixed candidate set).")] = None,
) -> None:
    """Encode every passage once, offline; `rank run --reranker twinbert --store` then only encodes queries."""
    from ranker.errors import RankerError
    from ranker.io.sources import iter_docs
    from ranker.rerank.registry import shipped_model
    from ranker.rerank.store_build import build_store, convert_store
    from ranker.rerank.twinbert import TwinBert

    if encoder is Encoder.biencoder:
        from ranker.rerank.biencoder import BiEncoder

        doc_encoder = BiEncoder(model, batch_size=batch_size, progress=False)
    else:
        doc_encoder = TwinBert.load(model or shipped_model("twinbert"))
    if from_store is not None:
        built = convert_store(doc_encoder, from_store, store, dtype.value)
    elif collection is None:
        raise RankerError("give --collection FILE to encode, or --from-store STORE to re-quantize")
    else:
        docs = iter_docs(collection)
        if candidates is not None:
            from ranker.io.formats import read_run

            wanted = {d.docno for ranked in read_run(candidates).values() for d in ranked}
            docs = (doc for doc in docs if doc.docno in wanted)
        built = build_store(doc_encoder, docs, store, dtype.value, batch_size=batch_size)
    size = built.size_bytes() / 2**20
    typer.echo(f"{len(built)} vectors ({built.dim} dims, {built.dtype}, {size:.1f} MiB) -> {store}")
