"""Building an embedding store: encode passages (or re-quantize a store) into a folder, resumably.

Rows are appended to a ``<name>.partial`` folder in chunks, and ``progress.json`` there records how many are
committed (written and fsynced). After a crash (even ``kill -9``) the next :func:`build_store` with the same
model, settings and documents drops anything past the committed rows, skips the documents already stored
(checking their docnos) and goes on. Chunks end on batch boundaries, so every passage is encoded in the same
batch as in an uninterrupted build and the result is byte-for-byte the same (on the same hardware and thread
count). The complete folder is renamed to ``<name>`` only at the end. The layout is :mod:`ranker.store.embeddings`'s.

A document longer than the encoder's window is stored as its overlapping windows, one row each
(:mod:`ranker.store.windows`); batches, chunks, shards and resumes count rows, so a collection where every document
fits gives the bytes it gave before windows.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.io.artifact import META_FILE, read_metadata
from ranker.io.atomic import exclusive
from ranker.store.embeddings import TEXT_HASH, DocEncoder, EmbeddingStore, partial_path, text_hashes
from ranker.store.partial import PartialBuild, check_plan
from ranker.store.quantization import quantization_rule, quantize
from ranker.store.windows import Windowing, window_rows, windowing_of
from ranker.types import Doc

COMMIT_SECONDS = 20.0
"""A build commits what it has encoded at least this often (and every ``chunk_size`` rows)."""


def build_store(model: DocEncoder, docs: Iterable[Doc | tuple[str, str]], path: str | Path,
                dtype: Literal["float16", "int8"] = "float16", batch_size: int = 64, chunk_size: int = 4096,
                progress: bool = True, shard: tuple[int, int] | None = None, windows: bool = False,
                stride: int | None = None) -> EmbeddingStore:
    """Encode passages into a store at ``path``, resuming an interrupted build of the same store.

    Args:
        model: The passage encoder (a :class:`ranker.models.twinbert.TwinBert`).
        docs: :class:`Doc` records (encoded as ``contents``) or ``(docno, text)`` pairs; on resume, the same
            sequence again.
        path: The store folder; must not exist yet.
        dtype: ``float16`` or ``int8`` (rule chosen by :func:`quantization_rule`).
        batch_size: Passages per forward pass; a resumed build must use the same.
        chunk_size: Rows committed to disk at a time (rounded up to whole batches).
        progress: Show a tqdm bar.
        shard: ``(i, n)``: encode only shard ``i`` of ``n`` — the documents of every ``n``-th batch of
            ``batch_size``, starting with batch ``i`` — into a partial store that :func:`merge_stores` joins with
            the other shards. Each passage is encoded in the batch a single build would put it in, so the merged
            store has the single build's bytes (same hardware and thread count).
        windows: Split a document longer than the encoder's window into overlapping windows, one row each
            (:mod:`ranker.store.windows`); ``False``: cut it to its first window, as stores were built before.
        stride: Tokens between window starts (default: half a window).

    Raises:
        RankerError: ``path`` exists, or the unfinished build there differs (model, settings or documents).
    """
    plan = encoder_plan(model, dtype, batch_size)
    windowing = windowing_of(model, windows, stride)
    if windowing is not None:
        plan["windows"] = windowing.plan()
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise RankerError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        plan["shard"] = [index, count]
        collection = hashlib.blake2b(digest_size=16)

        def of_shard(rows: Iterable[tuple]) -> Iterator[tuple]:
            for k, row in enumerate(rows):  # every row's docno of the collection goes into its fingerprint
                collection.update(row[0].encode("utf-8") + b"\n")
                if (k // batch_size) % count == index:
                    yield row

        def fill(build: PartialBuild) -> None:
            _encode_into(build, model, docs, chunk_size, progress, windowing, of_shard)
            build.plan["collection"] = collection.hexdigest()  # merging checks that the shards share it

        return build_planned(path, plan, fill)
    return build_planned(path, plan, lambda build: _encode_into(build, model, docs, chunk_size, progress, windowing))


PLAN_KEYS = ("dim", "dtype", "quantization", "model_fingerprint", "batch_size", "text_hash", "windows")
"""What a store's encoding depends on: the fields a build, a merge and a compaction carry over."""


def encoded_plan(store: EmbeddingStore) -> dict:
    """The :data:`PLAN_KEYS` of a built store (the plan that rebuilds its files)."""
    return {k: store.meta[k] for k in PLAN_KEYS if k in store.meta}


def stored_rows(store: EmbeddingStore, rows: np.ndarray) -> tuple:
    """A chunk for :meth:`PartialBuild.append` holding ``rows`` of ``store`` as stored (codes copied)."""
    return ([store.docnos[r] for r in rows], np.asarray(store.embeddings[rows]),
            None if store.scales is None else np.asarray(store.scales[rows]),
            None if store.hashes is None else np.asarray(store.hashes[rows]),
            None if store.windows is None else np.asarray(store.windows[rows]))


def cut_of(store: EmbeddingStore) -> int:
    """Documents a store's build cut to their first window (``rank encode --no-windows``)."""
    return store.meta.get("documents", {}).get("cut", 0)


def encoder_plan(model: DocEncoder, dtype: str, batch_size: int) -> dict:
    """What a store encoded by ``model`` records, and what a resumed build must match."""
    return {"dim": model.dim, "dtype": dtype, "quantization": quantization_rule(dtype, model.bounded),
            "model_fingerprint": model.fingerprint(), "batch_size": batch_size, "text_hash": TEXT_HASH}


def merge_stores(shards: Iterable[str | Path], path: str | Path, chunk_size: int = 4096) -> EmbeddingStore:
    """Join the ``n`` shard stores of one collection (:func:`build_store` with ``shard``) into the store a single
    build makes: their batches interleaved back into collection order, codes copied as they are. Resumable.

    Raises:
        RankerError: The shards are not the ``n`` shards of one build (another model or settings, a shard
            missing or repeated, rows that do not fit together); ``path`` exists.
    """
    stores = [EmbeddingStore.load(p) for p in shards]
    if any(s.deleted for s in stores):
        raise RankerError("a shard has deleted rows: shards are merged as they were encoded")
    if not stores:
        raise RankerError("give the shard stores to merge")
    first = stores[0].meta
    count = (first.get("shard") or [0, 0])[1]
    for store in stores:
        if "shard" not in store.meta:
            raise RankerError(f"{store.path} is not a shard (built without --shard)")
        differing = [k for k in PLAN_KEYS if store.meta.get(k) != first.get(k)]
        if store.meta.get("collection") != first.get("collection"):
            raise RankerError(f"{store.path} is a shard of another collection than {stores[0].path} (their "
                              "collection fingerprints differ: shards are built from the same documents)")
        if differing or store.meta["shard"][1] != count:
            raise RankerError(f"{store.path} is a shard of another build than {stores[0].path} (differs in "
                              f"{', '.join(differing) or 'the number of shards'})")
    by_index = {s.meta["shard"][0]: s for s in stores}
    if sorted(by_index) != list(range(count)) or len(stores) != count:
        raise RankerError(f"merging needs each of the {count} shards once; given shards "
                          f"{sorted(s.meta['shard'][0] for s in stores)}")
    seen: dict[str, Path] = {}
    for store in stores:  # shards of one collection hold disjoint docnos (a document's windows may straddle two)
        firsts = range(store.row_count) if store.windows is None else np.flatnonzero(store.windows[:, 0] == 0)
        for docno in (store.docnos[r] for r in firsts):
            if docno in seen:
                raise RankerError(f"docno {docno!r} is in two shards ({seen[docno]} and {store.path}): shards of "
                                  "one collection hold disjoint documents")
            seen[docno] = store.path
    plan = encoded_plan(stores[0])
    size, total = first["batch_size"], sum(s.row_count for s in stores)

    def interleave(build: PartialBuild) -> None:
        batch, chunk = build.rows // size, []
        while True:
            shard, start = by_index[batch % count], (batch // count) * size
            if start >= shard.row_count:
                break
            chunk.append(stored_rows(shard, np.arange(start, min(start + size, shard.row_count))))
            batch += 1
            if sum(len(c[0]) for c in chunk) >= chunk_size:
                build.append(chunk)
                chunk = []
        build.append(chunk)
        if build.rows != total:
            raise RankerError(f"the shards do not fit together: {build.rows} of their {total} rows interleave "
                              "(a shard from another collection, or a partial batch before the last)")
        build.cut = sum(cut_of(s) for s in stores)

    return build_planned(path, plan, interleave)


def convert_store(model: DocEncoder, source: str | Path, path: str | Path,
                  dtype: Literal["float16", "int8"] = "int8", chunk_size: int = 4096) -> EmbeddingStore:
    """A store at ``path`` holding ``source``'s vectors re-quantized to ``dtype``, without encoding again.

    The vectors are ``source``'s as stored (a float16 source gives int8 codes of the float16 values).

    Raises:
        RankerError: ``path`` exists.
        StoreMismatchError: ``source`` was built by another model.
    """
    given = EmbeddingStore.load(source, model)
    if given.deleted:
        raise RankerError(f"{source} has deleted rows: compact it first (rank encode --compact)")
    plan = {"dim": given.dim, "dtype": dtype, "quantization": quantization_rule(dtype, model.bounded),
            "model_fingerprint": given.fingerprint, "batch_size": given.meta["batch_size"],
            "converted_from": given.meta["quantization"], "text_hash": given.meta.get("text_hash")}
    if "windows" in given.meta:
        plan["windows"] = given.meta["windows"]

    def requantize(build: PartialBuild) -> None:
        for start in range(build.rows, given.row_count, chunk_size):
            rows = np.arange(start, min(start + chunk_size, given.row_count))
            _, _, _, hashes, windows = stored_rows(given, rows)
            build.append([(given.docnos[start:start + len(rows)],
                           *quantize(given.lookup_rows(rows), plan["quantization"]), hashes, windows)])
        build.cut = cut_of(given)

    return build_planned(path, plan, requantize)


def build_planned(path: str | Path, plan: dict, fill: Callable[[PartialBuild], None]) -> EmbeddingStore:
    """Build (or resume) the store ``plan`` describes at ``path``: ``fill`` appends the rows the build lacks."""
    final = Path(path)
    with exclusive(final, "store"):  # one build at a time
        return _complete_alone(final, plan, fill)


def _complete_alone(final: Path, plan: dict, fill: Callable[[PartialBuild], None]) -> EmbeddingStore:
    if final.exists():
        raise RankerError(f"{final} already exists; remove it to rebuild")
    folder = partial_path(final)
    if (folder / META_FILE).is_file():  # finished, but stopped before the rename
        check_plan(read_metadata(folder, "embedding-store"), plan, folder)
    else:
        build = PartialBuild(folder, plan)
        try:
            fill(build)
        except RankerError as e:
            raise RankerError(f"{e} (the {build.rows} rows encoded before are kept in {folder}: fix the input "
                              "and run the same command to resume, or delete that folder)") from None
        build.finish()
    folder.rename(final)
    return EmbeddingStore.load(final)


def _encode_into(build: PartialBuild, model: DocEncoder, docs: Iterable[Doc | tuple[str, str]],
                 chunk_size: int, progress: bool, windowing: Windowing | None = None,
                 select: Callable[[Iterable[tuple]], Iterator[tuple]] | None = None) -> None:
    """Encode the rows (documents, or their windows) ``build`` lacks, committing a chunk whenever ``chunk_size``
    rows are pending or :data:`COMMIT_SECONDS` have passed since the last commit (so a small, slow encode loses
    little when stopped); ``select`` keeps a shard's rows."""
    rows = window_rows(map(docno_text, docs), windowing, {}, build.plan["batch_size"])  # read no further ahead
    rows = select(rows) if select else rows
    cut = skip_committed(rows, build)
    pending: list[tuple] = []
    committed = time.monotonic()
    with tqdm(total=len(docs) if isinstance(docs, Sized) else None, desc="store", unit="doc",
              disable=not progress) as bar:
        for batch in batches(rows, build.plan["batch_size"]):
            docnos, texts = [r[0] for r in batch], [r[1] for r in batch]
            vectors = np.asarray(model.encode_docs(texts, len(texts)), dtype=np.float32)
            hashes = text_hashes(r[2] for r in batch)
            windows = np.array([(r[3], r[4]) for r in batch], dtype=np.int32).reshape(-1, 2)
            cut += sum(r[4] == 1 and r[1] != r[2] for r in batch)
            pending.append((docnos, *quantize(vectors, build.plan["quantization"]), hashes, windows))
            if sum(len(p[0]) for p in pending) >= chunk_size or time.monotonic() - committed >= COMMIT_SECONDS:
                build.append(pending)
                pending, committed = [], time.monotonic()
            bar.update(sum(r[3] == 0 for r in batch))
        build.append(pending)
    build.cut = cut


def skip_committed(items: Iterator[tuple], build: PartialBuild) -> int:
    """Advance ``items`` (rows: ``(docno, text, …)``) past the rows already stored, checking that their docnos are
    the stored ones; how many of them were cut (:mod:`ranker.store.windows` rows)."""
    cut = 0
    for row, stored in enumerate(build.committed_docnos()):
        item = next(items, None)
        if item is None or item[0] != stored:
            found = "the end of the documents" if item is None else f"docno {item[0]!r}"
            raise RankerError(f"{build.folder}: row {row} holds docno {stored!r} but the documents give {found}: "
                              "they are not the documents of the interrupted build; delete it to start over")
        cut += len(item) == 5 and item[4] == 1 and item[1] != item[2]
    return cut


def batches(items: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def docno_text(item: Doc | tuple[str, str]) -> tuple[str, str]:
    docno, text = (item.docno, item.contents) if isinstance(item, Doc) else item
    if not isinstance(docno, str) or not docno or "\n" in docno or "\r" in docno:
        raise RankerError(f"docno must be a non-empty string without line breaks, got {docno!r}")
    return docno, text
