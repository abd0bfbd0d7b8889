"""``rank encode``: the TwinBERT document side (or a bi-encoder) of every document of a collection, into an
embedding store."""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from ranker.cli.options import output_folder, parse_shard


class Encoder(str, Enum):
    twinbert = "twinbert"
    biencoder = "biencoder"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Backend(str, Enum):
    torch = "torch"
    onnx = "onnx"


class Dtype(str, Enum):
    float16 = "float16"
    int8 = "int8"


def encode(
    store: Annotated[Path, typer.Option(
        help="Store folder to create; an interrupted encode resumes.", callback=output_folder)],
    collection: Annotated[list[str] | None, typer.Option(
        help="Collection file (TSV, BEIR, Pyserini JSONL) or irds:<id>; repeatable (a docno in several: the "
             "first one's text).")] = None,
    model: Annotated[str | None, typer.Option(
        help="TwinBERT folder (default: models/twinbert), or the bi-encoder's (minilm, mpnet, a folder).")] = None,
    encoder: Annotated[Encoder, typer.Option(
        help="twinbert: the student's document tower; biencoder: a sentence-transformers model (mean pooling, "
             "unit vectors) for `--reranker biencoder --store` and `sentence-transformers`.")] = Encoder.twinbert,
    dtype: Annotated[Dtype, typer.Option(help="float16, or int8 (1 byte a dimension).")] = Dtype.float16,
    backend: Annotated[Backend, typer.Option(
        help="--encoder biencoder: torch, or onnx (ONNX Runtime, float32: the same vectors to 1e-3, checked at "
             "export). mpnet over SciFact abstracts, 2 threads of a 2-core AMD EPYC (rank bench-encode): onnx 2.23 "
             "passages/s, torch 1.83. The store is the same model's either way.")] = Backend.torch,
    batch_size: Annotated[int, typer.Option(min=1, help="Passages per forward pass.")] = 64,
    from_store: Annotated[Path | None, typer.Option(
        help="Re-quantize this store of the same model instead of encoding (--collection is then unused).")] = None,
    candidates: Annotated[Path | None, typer.Option(
        help="Encode (or --add) only the passages this TREC run ranks (a store for a fixed candidate set).")] = None,
    shard: Annotated[str | None, typer.Option(
        help="I/N: encode shard I of N (every N-th batch) into a partial store; --merge joins the N shards into "
             "the store a single encode makes.", callback=parse_shard)] = None,
    merge: Annotated[list[Path] | None, typer.Option(
        help="Shard stores to join into --store (repeatable; every shard of one encode, once).")] = None,
    engine: Annotated[Engine, typer.Option(
        help="local: this process; ray: Ray Data with an actor pool (pip install 'ranker\\[ray]').")] = Engine.local,
    address: Annotated[str | None, typer.Option(
        help="--engine ray: a running cluster's address (ray start --head prints it); default: start a local "
             "Ray instance.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="--engine ray: actors encoding at once.")] = 2,
    threads: Annotated[int | None, typer.Option(
        min=1, help="torch CPU threads (per actor with --engine ray; default there 1).")] = None,
    add: Annotated[bool, typer.Option(help="Encode --collection's documents into the existing --store.")] = False,
    replace: Annotated[bool, typer.Option(help="--add: re-encode documents the store holds (else an error).")] = False,
    delete: Annotated[Path | None, typer.Option(
        help="Tombstone the docnos in this file (one a line) in the existing --store.")] = None,
    compact: Annotated[bool, typer.Option(help="Rewrite the existing --store without its tombstoned rows.")] = False,
    windows: Annotated[bool, typer.Option(
        "--windows/--no-windows",
        help="Split a document longer than the encoder's passage length into overlapping windows, one row each "
             "(a document scores its best window; MaxP); --no-windows (the default: it ranked higher on the "
             "validation sets, docs/experiments.md) cuts it to its first window and counts the cut.")] = False,
    window_stride: Annotated[int | None, typer.Option(
        min=1, help="Tokens between window starts (default: half a window).")] = None,
) -> None:
    """Encode every passage once, offline; `rank run --reranker twinbert --store` then only encodes queries."""
    from ranker.errors import RankerError
    from ranker.models.loading import doc_encoder
    from ranker.store.build import build_store, convert_store, merge_stores

    _one_mode(add or delete or compact, bool(merge), from_store is not None, shard is not None, engine is Engine.ray)
    if backend is not Backend.torch and engine is Engine.ray:
        raise RankerError("--backend onnx runs in this process; it cannot go with --engine ray")
    docs = _docs(collection, candidates) if collection else None
    if add or delete or compact:
        built = _edit(store, docs, model, encoder, add, replace, delete, compact, backend.value,
                      (windows, window_stride))
    elif merge:
        built = merge_stores(merge, store)
    elif from_store is not None:
        built = convert_store(doc_encoder(encoder.value, model), from_store, store, dtype.value)
    elif docs is None:
        raise RankerError("give --collection FILE to encode, --from-store STORE to re-quantize, or --merge SHARDS")
    else:
        if engine is Engine.ray:
            import functools

            from ranker.models.loading import student_path
            from ranker.store.distributed import build_store_ray

            if encoder is Encoder.twinbert:  # resolved here: the actors' processes know no `rank --models`
                model = str(student_path(model))
            built = build_store_ray(functools.partial(doc_encoder, encoder.value, model), docs, store, dtype.value,
                                    batch_size, workers, threads or 1, address, windows=windows,
                                    stride=window_stride)
        else:
            if threads:
                import torch

                torch.set_num_threads(threads)
            built = build_store(doc_encoder(encoder.value, model, batch_size, backend.value), docs, store, dtype.value,
                                batch_size=batch_size, shard=shard, windows=windows, stride=window_stride)
    typer.echo(summary(built, store))


def summary(built, store: Path) -> str:
    """The last line: rows, documents, how many were split into how many windows (or cut)."""
    size, counts = built.size_bytes() / 2**20, built.meta.get("documents", {})
    line = f"{built.row_count - len(built.deleted):,} vectors ({built.dim} dims, {built.dtype}, {size:.1f} MiB)"
    if counts:
        line += f", {counts['count']:,} documents, {counts['split']:,} split into {counts['windows']:,} windows"
        settings = built.meta.get("windows") or {}
        if counts.get("cut") or settings.get("split") is False:
            line += f", {counts.get('cut', 0):,} cut to their first {settings.get('tokens', '?')} tokens"
    return f"{line} -> {store}"


class _Documents:
    """The documents of every collection in turn (a docno seen before skipped), only ``candidates``' if given;
    ``len`` counts them in a first pass, so the encoder's bar shows a total and an ETA."""

    def __init__(self, collections: list[str], candidates: Path | None):
        self.collections, self.wanted, self._count = collections, None, None
        if candidates is not None:
            from ranker.io.formats import read_run

            self.wanted = {d.docno for ranked in read_run(candidates).values() for d in ranked}

    def __iter__(self) -> Iterator:
        from ranker.io.sources import iter_docs

        seen: set[str] = set()
        for collection in self.collections:
            for doc in iter_docs(collection):
                if doc.docno not in seen and (self.wanted is None or doc.docno in self.wanted):
                    seen.add(doc.docno)
                    yield doc

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self)
        return self._count


def _docs(collections: list[str], candidates: Path | None) -> _Documents:
    """The documents to encode (:class:`_Documents`)."""
    return _Documents(collections, candidates)


def _one_mode(edit: bool, merge: bool, convert: bool, shard: bool, ray: bool) -> None:
    """Refuse options that cannot go together (one would be silently dropped)."""
    from ranker.errors import RankerError

    chosen = [name for name, on in (("--add/--delete/--compact", edit), ("--merge", merge),
                                    ("--from-store", convert)) if on]
    if len(chosen) > 1:
        raise RankerError(f"{' and '.join(chosen)} cannot go together: one kind of store work per command")
    if shard and (ray or chosen):
        other = "--engine ray" if ray else chosen[0]
        raise RankerError(f"--shard splits a single-machine build; it cannot go with {other}")


def _edit(store: Path, docs: Iterator | None, model: str | None, encoder: Encoder, add: bool, replace: bool,
          delete: Path | None, compact: bool, backend: str, windows: tuple[bool, int | None] = (True, None)):
    """``--add`` and ``--delete`` (in one commit), then ``--compact``, on an existing store."""
    from ranker.errors import RankerError
    from ranker.io.formats import read_ids
    from ranker.models.loading import doc_encoder
    from ranker.store import edit as store_edit
    from ranker.store.embeddings import EmbeddingStore

    if add and docs is None:
        raise RankerError("--add needs --collection FILE")
    ids = read_ids(delete) if delete else []  # read first: a bad file changes nothing
    built = EmbeddingStore.load(store)
    if add:  # with --delete: one commit
        built = store_edit.add_to_store(doc_encoder(encoder.value, model, built.meta["batch_size"], backend),
                                        docs, store, replace=replace, delete=ids,
                                        windows=None if windows == (True, None) else windows[0], stride=windows[1])
    elif delete:
        built = store_edit.delete_from_store(store, ids)
    if compact:
        built = store_edit.compact_store(store)
    return built
