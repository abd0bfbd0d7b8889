"""Building an embedding store: encode passages (or re-quantize a store) into a folder, resumably.

Rows are appended to a ``<name>.partial`` folder in chunks, and ``progress.json`` there records how many are
committed (written and fsynced). After a crash (even ``kill -9``) the next :func:`build_store` with the same
model, settings and documents drops anything past the committed rows, skips the documents already stored
(checking their docnos) and goes on. Chunks end on batch boundaries, so every passage is encoded in the same
batch as in an uninterrupted build and the result is byte-for-byte the same (on the same hardware and thread
count). The complete folder is renamed to ``<name>`` only at the end. The layout is :mod:`ranker.store.embeddings`'s.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.io.artifact import META_FILE, read_metadata, write_metadata
from ranker.io.atomic import exclusive, write_json
from ranker.store.embeddings import (
    DEFAULT_FILES,
    DOCNOS,
    EMBEDDINGS,
    HASHES,
    PROGRESS,
    SCALES,
    TEXT_HASH,
    DocEncoder,
    EmbeddingStore,
    partial_path,
    read_docnos,
    text_hashes,
)
from ranker.store.keys import SortedIndex, docno_keys, hash_keys
from ranker.store.quantization import QUANTIZATION, quantization_rule, quantize
from ranker.types import Doc

COMMIT_SECONDS = 20.0
"""A build commits what it has encoded at least this often (and every ``chunk_size`` rows)."""


def build_store(model: DocEncoder, docs: Iterable[Doc | tuple[str, str]], path: str | Path,
                dtype: Literal["float16", "int8"] = "float16", batch_size: int = 64, chunk_size: int = 4096,
                progress: bool = True, shard: tuple[int, int] | None = None) -> EmbeddingStore:
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

    Raises:
        RankerError: ``path`` exists, or the unfinished build there differs (model, settings or documents).
    """
    plan = encoder_plan(model, dtype, batch_size)
    if shard is not None:
        index, count = shard
        if not 0 <= index < count:
            raise RankerError(f"shard must be I/N with 0 <= I < N, got {index}/{count}")
        plan["shard"] = [index, count]
        collection = hashlib.blake2b(digest_size=16)

        def of_shard(items: Iterable[Doc | tuple[str, str]]) -> Iterator[Doc | tuple[str, str]]:
            for k, doc in enumerate(items):  # every docno of the collection goes into its fingerprint
                collection.update(docno_text(doc)[0].encode("utf-8") + b"\n")
                if (k // batch_size) % count == index:
                    yield doc

        def fill(build: PartialBuild) -> None:
            _encode_into(build, model, of_shard(docs), chunk_size, progress)
            build.plan["collection"] = collection.hexdigest()  # merging checks that the shards share it

        return build_planned(path, plan, fill)
    return build_planned(path, plan, lambda build: _encode_into(build, model, docs, chunk_size, progress))


PLAN_KEYS = ("dim", "dtype", "quantization", "model_fingerprint", "batch_size", "text_hash")
"""What a store's encoding depends on: the fields a build, a merge and a compaction carry over."""


def encoded_plan(store: EmbeddingStore) -> dict:
    """The :data:`PLAN_KEYS` of a built store (the plan that rebuilds its files)."""
    return {k: store.meta[k] for k in PLAN_KEYS if k in store.meta}


def stored_rows(store: EmbeddingStore, rows: np.ndarray) -> tuple:
    """A chunk for :meth:`PartialBuild.append` holding ``rows`` of ``store`` as stored (codes copied)."""
    return ([store.docnos[r] for r in rows], np.asarray(store.embeddings[rows]),
            None if store.scales is None else np.asarray(store.scales[rows]),
            None if store.hashes is None else np.asarray(store.hashes[rows]))


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
    for store in stores:  # shards of one collection hold disjoint docnos
        for docno in store.docnos:
            if docno in seen:
                raise RankerError(f"docno {docno!r} is in two shards ({seen[docno]} and {store.path}): shards of "
                                  "one collection hold disjoint documents")
            seen[docno] = store.path
    plan = encoded_plan(stores[0])
    size, total = first["batch_size"], sum(len(s) for s in stores)

    def interleave(build: PartialBuild) -> None:
        batch, chunk = build.rows // size, []
        while True:
            shard, start = by_index[batch % count], (batch // count) * size
            if start >= len(shard):
                break
            chunk.append(stored_rows(shard, np.arange(start, min(start + size, len(shard)))))
            batch += 1
            if sum(len(c[0]) for c in chunk) >= chunk_size:
                build.append(chunk)
                chunk = []
        build.append(chunk)
        if build.rows != total:
            raise RankerError(f"the shards do not fit together: {build.rows} of their {total} rows interleave "
                              "(a shard from another collection, or a partial batch before the last)")

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

    def requantize(build: PartialBuild) -> None:
        for start in range(build.rows, len(given), chunk_size):
            docnos = given.docnos[start:start + chunk_size]
            hashes = None if given.hashes is None else np.asarray(given.hashes[start:start + chunk_size])
            build.append([(docnos, *quantize(given.lookup(docnos), plan["quantization"]), hashes)])

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
        _check_plan(read_metadata(folder, "embedding-store"), plan, folder)
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
                 chunk_size: int, progress: bool) -> None:
    """Encode what ``build`` lacks, committing a chunk whenever ``chunk_size`` rows are pending or
    :data:`COMMIT_SECONDS` have passed since the last commit (so a small, slow encode loses little when stopped)."""
    items = map(docno_text, docs)
    skip_committed(items, build)
    pending: list[tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray]] = []
    committed = time.monotonic()
    with tqdm(total=len(docs) if isinstance(docs, Sized) else None, initial=build.rows, desc="store",
              unit="doc", disable=not progress) as bar:
        for batch in batches(items, build.plan["batch_size"]):
            docnos, texts = [d for d, _ in batch], [t for _, t in batch]
            vectors = np.asarray(model.encode_docs(texts, len(texts)), dtype=np.float32)
            hashes = text_hashes(texts)
            pending.append((docnos, *quantize(vectors, build.plan["quantization"]), hashes))
            if sum(len(p[0]) for p in pending) >= chunk_size or time.monotonic() - committed >= COMMIT_SECONDS:
                build.append(pending)
                pending, committed = [], time.monotonic()
            bar.update(len(batch))
        build.append(pending)


def skip_committed(items: Iterator[tuple[str, str]], build: PartialBuild) -> None:
    """Advance ``items`` past the rows already stored, checking that their docnos are the stored ones."""
    for row, stored in enumerate(build.committed_docnos()):
        item = next(items, None)
        if item is None or item[0] != stored:
            found = "the end of the documents" if item is None else f"docno {item[0]!r}"
            raise RankerError(f"{build.folder}: row {row} holds docno {stored!r} but the documents give {found}: "
                              "they are not the documents of the interrupted build; delete it to start over")


def batches(items: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def docno_text(item: Doc | tuple[str, str]) -> tuple[str, str]:
    docno, text = (item.docno, item.contents) if isinstance(item, Doc) else item
    if not isinstance(docno, str) or not docno or "\n" in docno or "\r" in docno:
        raise RankerError(f"docno must be a non-empty string without line breaks, got {docno!r}")
    return docno, text


def _check_plan(found: dict, plan: dict, folder: Path) -> None:
    differing = {k: (found.get(k), v) for k, v in plan.items() if found.get(k) != v}
    if differing:
        details = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differing.items())
        raise RankerError(f"{folder}: an unfinished build with other settings ({details}); delete it to start over")


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """An ``.npy`` header; numpy pads it so that growing ``shape[0]`` keeps its length."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


class PartialBuild:
    """A build in progress: ``.npy`` files with a provisional header, grown by appending committed chunks.

    ``progress.json`` holds the plan (model fingerprint and settings), the committed row count and the committed
    length of ``docnos.txt``; bytes past those are a chunk that was being written when the build stopped.
    """

    def __init__(self, folder: Path, plan: dict):
        self.folder, self.plan = folder, plan
        self.arrays = {EMBEDDINGS: (plan["dtype"], (plan["dim"],))}
        if plan["quantization"] == "int8-absmax":
            self.arrays[SCALES] = ("float32", ())
        if plan.get("text_hash"):
            self.arrays[HASHES] = ("uint8", (16,))
        if (folder / PROGRESS).is_file():
            self.progress = json.loads((folder / PROGRESS).read_text())
            _check_plan(self.progress, plan, folder)
            self._truncate()
        else:
            self._start()

    @property
    def rows(self) -> int:
        return self.progress["rows"]

    def _start(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        for name, (dtype, row_shape) in self.arrays.items():
            (self.folder / name).write_bytes(npy_header(dtype, (0, *row_shape)))
        (self.folder / DOCNOS).write_bytes(b"")
        self.progress = {**self.plan, "rows": 0, "docnos_bytes": 0}
        write_json(self.folder / PROGRESS, self.progress)

    def _truncate(self) -> None:
        """Drop bytes past the committed rows."""
        for name, (dtype, row_shape) in self.arrays.items():
            row_bytes = np.dtype(dtype).itemsize * int(np.prod(row_shape))
            os.truncate(self.folder / name, len(npy_header(dtype, (0, *row_shape))) + self.rows * row_bytes)
        os.truncate(self.folder / DOCNOS, self.progress["docnos_bytes"])

    def committed_docnos(self) -> list[str]:
        return read_docnos(self.folder / DOCNOS)

    def append(self, chunk: list[tuple[list[str], np.ndarray, np.ndarray | None, np.ndarray | None]]) -> None:
        """Write and fsync a chunk of batches ``(docnos, codes, scales, text hashes)``, then commit it in
        ``progress.json``."""
        if not chunk:
            return
        parts = {EMBEDDINGS: [c[1] for c in chunk], SCALES: [c[2] for c in chunk], HASHES: [c[3] for c in chunk]}
        for name in self.arrays:
            _append_bytes(self.folder / name, b"".join(np.ascontiguousarray(a).tobytes() for a in parts[name]))
        docnos = [d for batch, *_ in chunk for d in batch]
        _append_bytes(self.folder / DOCNOS, "".join(f"{d}\n" for d in docnos).encode("utf-8"))
        self.progress["rows"] += len(docnos)
        self.progress["docnos_bytes"] = (self.folder / DOCNOS).stat().st_size
        write_json(self.folder / PROGRESS, self.progress)

    def finish(self) -> None:
        """Give the ``.npy`` files their final shapes, write ``ranker.json`` and drop ``progress.json``."""
        for name, (dtype, row_shape) in self.arrays.items():
            header = npy_header(dtype, (self.rows, *row_shape))
            if len(header) != len(npy_header(dtype, (0, *row_shape))):
                raise RankerError(f"{self.folder / name}: {self.rows} rows do not fit the .npy header")
            with open(self.folder / name, "r+b") as f:
                f.write(header)
                f.flush()
                os.fsync(f.fileno())
        hashes = np.lib.format.open_memmap(self.folder / HASHES, mode="r") if HASHES in self.arrays else None
        write_indexes(self.folder, self.committed_docnos(), hashes)
        write_metadata(self.folder, "embedding-store", count=self.rows, **self.plan,
                       quantization_rule=QUANTIZATION[self.plan["quantization"]], normalisation="none")
        (self.folder / PROGRESS).unlink()


def write_indexes(folder: Path, docnos: Sequence[str], hashes: np.ndarray | None,
                  files: dict[str, str] = DEFAULT_FILES) -> None:
    """The sorted docno (and text-hash) indexes of a store's rows (:class:`ranker.store.keys.SortedIndex`), as
    the files ``files`` names."""
    SortedIndex.of(docno_keys(docnos)).save(folder, files, "docno")
    if hashes is not None:
        SortedIndex.of(hash_keys(np.asarray(hashes[:len(docnos)]))).save(folder, files, "hash")


def _append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
