"""Changing a built store in place: add documents, delete them (tombstones), compact.

* :func:`add_to_store` encodes new documents with the store's model and appends them; a docno the store already
  holds is an error unless ``replace``, which tombstones the old row and appends the new one.
* :func:`delete_from_store` tombstones rows; an unknown docno is an error and nothing changes.
* :func:`compact_store` rewrites the store without its tombstoned rows (the folder is replaced whole).

An edit appends its rows past the committed ``count`` first and commits by rewriting ``ranker.json`` (count and
``deleted_rows``) atomically last, so a stopped edit leaves the store as it was (the uncommitted tail is ignored by
readers and cut by the next edit). One writer at a time: an edit holds an OS lock on ``.NAME.lock`` beside the store
(beside, since compaction replaces the folder) and a second edit is refused in one line. After add, delete and
compact the store ranks as one rebuilt from the final collection in the same order (rows in the same order; vectors
equal up to the batch a passage was encoded in).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.io.artifact import update_metadata
from ranker.io.atomic import atomic_dir
from ranker.rerank.quantization import quantize
from ranker.rerank.store import DOCNOS, EMBEDDINGS, HASHES, SCALES, DocEncoder, EmbeddingStore, text_hashes
from ranker.rerank.store_build import (
    _batches,
    _docno_text,
    _npy_header,
    _PartialBuild,
    encoded_plan,
    stored_rows,
    write_indexes,
)
from ranker.types import Doc


@contextmanager
def edit_lock(path: str | Path) -> Iterator[None]:
    """Hold the store's writer lock (``.NAME.lock`` beside it, ``flock``), or refuse at once if another holds it."""
    path = Path(path).resolve()
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RankerError(f"the store {path} is being edited by another process: rerun when it has "
                              "finished") from None
        yield


def _arrays(store: EmbeddingStore) -> dict[str, tuple[str, tuple[int, ...]]]:
    arrays = {EMBEDDINGS: (store.dtype, (store.dim,))}
    if store.scales is not None:
        arrays[SCALES] = ("float32", ())
    if store.hashes is not None:
        arrays[HASHES] = ("uint8", (16,))
    return arrays


def _commit(store: EmbeddingStore, count: int, deleted: Iterable[int]) -> EmbeddingStore:
    """Give the ``.npy`` files ``count`` rows and the indexes those rows, then write ``ranker.json``: the edit's
    commit point (a reader finds indexes of another row count stale and builds its own until then)."""
    if count != store.row_count:
        docnos = (store.path / DOCNOS).read_bytes().decode("utf-8").split("\n")[:count]
        write_indexes(store.path, docnos, store.path / HASHES if store.hashes is not None else None)
    for name, (dtype, shape) in _arrays(store).items():
        header = _npy_header(dtype, (count, *shape))
        with open(store.path / name, "r+b") as f:
            f.write(header)
            f.flush()
            os.fsync(f.fileno())
    update_metadata(store.path, "embedding-store", count=count, deleted_rows=sorted(deleted))
    return EmbeddingStore.load(store.path)


def _cut_uncommitted(store: EmbeddingStore) -> None:
    """Drop bytes past the committed rows (a stopped edit's tail)."""
    for name, (dtype, shape) in _arrays(store).items():
        row_bytes = np.dtype(dtype).itemsize * int(np.prod(shape))
        os.truncate(store.path / name, len(_npy_header(dtype, (0, *shape))) + store.row_count * row_bytes)
    os.truncate(store.path / DOCNOS, len("".join(f"{d}\n" for d in store.docnos).encode("utf-8")))


def add_to_store(model: DocEncoder, docs: Iterable[Doc | tuple[str, str]], path: str | Path,
                 replace: bool = False) -> EmbeddingStore:
    """Encode ``docs`` with ``model`` (the store's) and append them.

    Raises:
        StoreMismatchError: ``model`` did not build the store.
        RankerError: A docno repeated among ``docs``, or one the store holds (without ``replace``).
    """
    with edit_lock(path):
        store = EmbeddingStore.load(path, model)
        items = [_docno_text(d) for d in docs]
        seen: set[str] = set()
        for docno, _ in items:
            if docno in seen:
                raise RankerError(f"docno {docno!r} is given twice among the documents to add")
            seen.add(docno)
        rows = store.rows_of([d for d, _ in items])
        held = [d for (d, _), row in zip(items, rows) if row is not None]
        if held and not replace:
            raise RankerError(f"{len(held)} docno(s) are already in the store {path}: {', '.join(held[:5])} "
                              "(--replace re-encodes them)")
        deleted = set(store.deleted) | {row for row in rows if row is not None}
        _cut_uncommitted(store)
        rule = store.meta["quantization"]
        bar = tqdm(total=len(items), desc="add", unit="doc", disable=len(items) <= store.meta["batch_size"])
        for batch in _batches(iter(items), store.meta["batch_size"]):
            texts = [t for _, t in batch]
            codes, scales = quantize(np.asarray(model.encode_docs(texts, len(texts)), dtype=np.float32), rule)
            parts = {EMBEDDINGS: codes, SCALES: scales,
                     HASHES: text_hashes(texts)}
            for name in _arrays(store):
                with open(store.path / name, "ab") as f:
                    f.write(np.ascontiguousarray(parts[name]).tobytes())
            with open(store.path / DOCNOS, "ab") as f:
                f.write("".join(f"{d}\n" for d, _ in batch).encode("utf-8"))
            bar.update(len(batch))
        bar.close()
        return _commit(store, store.row_count + len(items), deleted)


def delete_from_store(path: str | Path, docnos: Sequence[str]) -> EmbeddingStore:
    """Tombstone the rows of ``docnos``.

    Raises:
        RankerError: A docno the store does not hold (the first few are named); nothing is deleted then.
    """
    with edit_lock(path):
        store = EmbeddingStore.load(path)
        rows = store.rows_of(docnos)
        unknown = [d for d, row in zip(docnos, rows) if row is None]
        if unknown:
            raise RankerError(f"{len(unknown)} docno(s) to delete are not in the store {path}: "
                              f"{', '.join(unknown[:5])}")
        return _commit(store, store.row_count, set(store.deleted) | set(rows))


def compact_store(path: str | Path, chunk_size: int = 4096) -> EmbeddingStore:
    """Rewrite the store without its tombstoned rows (codes copied as they are); the folder is replaced whole (the
    real folder, where ``path`` is a symbolic link)."""
    path = Path(path).resolve()
    with edit_lock(path):
        store = EmbeddingStore.load(path)
        live = store.live_rows()
        with atomic_dir(path) as tmp:
            build = _PartialBuild(tmp, encoded_plan(store))
            for start in range(0, len(live), chunk_size):
                build.append([stored_rows(store, live[start:start + chunk_size])])
            build.finish()
        return EmbeddingStore.load(path)
