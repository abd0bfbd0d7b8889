"""Changing a built store in place, as transactions: add documents, delete them (tombstones), compact.

* :func:`add_to_store` encodes new documents with the store's model and appends them (a long document as its
  windows, as the store was built: :mod:`ranker.store.windows`); a docno the store already holds is an error
  unless ``replace``, which tombstones the old rows and appends the new ones.
* :func:`delete_from_store` tombstones a document's rows (every window); an unknown docno is an error and nothing
  changes.
* :func:`compact_store` rewrites the store without its tombstoned rows, as new files beside the old.

Every edit is one commit (after SQLite's journal and Lucene's ``segments_N``): under the store's writer lock
(:func:`ranker.io.atomic.exclusive`; a second writer is refused in one line), it first removes what a stopped edit
left (rows past the committed ``count``, files no commit names), then appends rows past ``count`` or writes new
files (the indexes, or a compaction's whole store, named for the next generation), fsyncs them, and commits by one
atomic rename of ``ranker.json`` (count, ``deleted_rows``, ``generation``, ``files``); only then are the files the
commit no longer names removed. A stop anywhere — a signal, ``kill -9``, a full disk — leaves the store as it was
before the edit or, once ``ranker.json`` is renamed, as after it; readers (``rank run``, ``rank serve``) open one
commit and never see half an edit. After add, delete and compact the store ranks as one rebuilt from the final
collection in the same order (rows in the same order; vectors equal up to the batch a passage was encoded in).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ranker.errors import RankerError
from ranker.io.artifact import META_FILE, write_metadata
from ranker.io.atomic import exclusive, sync_folder
from ranker.store.build import batches, docno_text, encoded_plan, stored_rows
from ranker.store.embeddings import DocEncoder, EmbeddingStore, open_rows, read_docnos, text_hashes
from ranker.store.files import DEFAULT_FILES, ROLE_FILES, generation_name, store_file_name, store_files
from ranker.store.partial import PartialBuild, npy_header, write_indexes
from ranker.store.quantization import quantize
from ranker.store.windows import stored_windowing, window_counts, window_rows, windowing_of
from ranker.types import Doc

COMPACTING = ".compacting"
"""Folder inside the store where a compaction builds the new files before they are moved beside the old."""
INDEX_ROLES = ("docno_keys", "docno_order", "docno_slots", "hash_keys", "hash_order", "hash_slots")


def commit_step(step: str) -> None:
    """Called at each step of an edit (``append``, ``index``, ``move``, ``sync``, ``commit``, ``committed``,
    ``clean``); crash-injection tests replace it to stop the process there."""


def _data_roles(store: EmbeddingStore) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The row files of ``store``: role -> (dtype, row shape)."""
    roles = {"embeddings": (store.dtype, (store.dim,))}
    if store.scales is not None:
        roles["scales"] = ("float32", ())
    if store.hashes is not None:
        roles["text_hashes"] = ("uint8", (16,))
    if store.windows is not None:
        roles["windows"] = ("int32", (2,))
    return roles


def _clean(store: EmbeddingStore) -> None:
    """Remove what a stopped edit left: rows past the committed count, files no commit names, temporary files of
    atomic writes, a compaction's unfinished folder (under the writer lock; readers never open those)."""
    files = store_files(store.meta)
    named = set(files.values())
    for file in store.path.iterdir():
        if file.name == COMPACTING:
            shutil.rmtree(file)
        elif file.is_file() and (store_file_name(file.name) and file.name not in named or _temporary(file.name)):
            file.unlink()
    for role, (dtype, shape) in _data_roles(store).items():
        row_bytes = np.dtype(dtype).itemsize * int(np.prod(shape))
        os.truncate(store.path / files[role], len(npy_header(dtype, (0, *shape))) + store.row_count * row_bytes)
    os.truncate(store.path / files["docnos"], len("".join(f"{d}\n" for d in store.docnos).encode("utf-8")))


def _temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file an atomic write of the store's own left (``.docno_keys.3.npy.x1.tmp``,
    ``.ranker.json.x1.tmp``: a process killed before its rename)."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    written = name[1:-len(".tmp")].rpartition(".")[0]
    return written == META_FILE or store_file_name(written)


def _commit(store: EmbeddingStore, count: int, deleted: Iterable[int], files: dict[str, str] | None = None,
            rebuilt: dict | None = None, cut: int = 0) -> EmbeddingStore:
    """Commit the next generation of ``store``: ``count`` rows (indexes written anew when it changes), ``deleted``
    tombstones, ``files`` (default: the same files), ``rebuilt`` the metadata of a compaction's new files, ``cut``
    documents more cut to their first window."""
    generation = store.generation + 1
    files = dict(files or store_files(store.meta))
    windows = open_rows(store.path / files["windows"], "int32", (2,), count) if "windows" in files else None
    if count != store.row_count and rebuilt is None:  # new rows: indexes of them, under this generation's names
        kinds = ("docno", "hash") if store.hashes is not None else ("docno",)
        files.update({role: generation_name(role, generation) for role in INDEX_ROLES if role.split("_")[0] in kinds})
        docnos = read_docnos(store.path / files["docnos"])[:count]
        hashes = open_rows(store.path / files["text_hashes"], "uint8", (16,), count) if "hash" in kinds else None
        write_indexes(store.path, docnos, hashes, files, windows)
        commit_step("index")
    for role in {*_data_roles(store), *(("windows",) if windows is not None else ())}:
        with open(store.path / files[role], "rb+") as f:
            os.fsync(f.fileno())
    with open(store.path / files["docnos"], "rb+") as f:
        os.fsync(f.fileno())
    sync_folder(store.path)
    commit_step("sync")
    kept = {k: v for k, v in (rebuilt or store.meta).items() if k not in (
        "type", "format_version", "ranker_version", "deleted_rows", "generation", "files", "count", "documents")}
    changed = {role: name for role, name in files.items() if name != DEFAULT_FILES.get(role)}
    documents = {**window_counts(windows, count, deleted), "cut": store.meta.get("documents", {}).get("cut", 0) + cut}
    commit_step("commit")
    write_metadata(store.path, "embedding-store", **kept, count=count, documents=documents,
                   **({"deleted_rows": sorted(deleted)} if deleted else {}), generation=generation,
                   **({"files": changed} if changed else {}))
    commit_step("committed")
    for name in set(store_files(store.meta).values()) - set(files.values()):  # the previous commit's, now unnamed
        try:
            (store.path / name).unlink(missing_ok=True)
        except OSError:  # the commit stands; the next edit removes what is left
            break
        commit_step("clean")
    return EmbeddingStore.load(store.path)


def _edit(path: str | Path, change: Callable[[EmbeddingStore], EmbeddingStore],
          model: DocEncoder | None = None) -> EmbeddingStore:
    """Run ``change`` on the store's last commit under its writer lock, after cleaning what a stopped edit left;
    an OS error (a full disk) becomes one line naming the file."""
    with exclusive(path, "store"):
        store = EmbeddingStore.load(path, model)
        try:
            _clean(store)
            return change(store)
        except OSError as e:
            where = e.filename or path
            raise RankerError(f"{where}: {e.strerror or e}: the edit was not committed, the store {path} is as it "
                              "was (what it wrote is removed by the next edit)") from None


def add_to_store(model: DocEncoder, docs: Iterable[Doc | tuple[str, str]], path: str | Path,
                 replace: bool = False, windows: bool | None = None, stride: int | None = None,
                 delete: Sequence[str] = ()) -> EmbeddingStore:
    """Encode ``docs`` with ``model`` (the store's) and append them, and delete the documents ``delete`` names, in
    one commit: a document longer than the model's window as its windows (``windows``: ``None`` as the store
    records, else split or cut; ``stride``: tokens between windows, default half a window).

    Raises:
        StoreMismatchError: ``model`` did not build the store.
        RankerError: A docno repeated among ``docs``, one the store holds (without ``replace``), one to delete that
            the store lacks or that is also added, or an OS error; nothing is committed then.
    """
    items = [docno_text(d) for d in docs]

    def add(store: EmbeddingStore) -> EmbeddingStore:
        seen: set[str] = set()
        for docno, _ in items:
            if docno in seen:
                raise RankerError(f"docno {docno!r} is given twice among the documents to add")
            seen.add(docno)
        if both := [d for d in delete if d in seen]:
            raise RankerError(f"{len(both)} docno(s) are both added and deleted: {', '.join(both[:5])}")
        rows = store.rows_of([d for d, _ in items])
        held = [d for (d, _), row in zip(items, rows) if row is not None]
        if held and not replace:
            raise RankerError(f"{len(held)} docno(s) are already in the store {path}: {', '.join(held[:5])} "
                              "(--replace re-encodes them)")
        old = [row for row in rows if row is not None] + _rows_to_delete(store, delete, path)
        deleted = set(store.deleted) | set(store.window_rows(old)[0].tolist())
        windowing = stored_windowing(model, store.meta) if windows is None else windowing_of(model, windows, stride)
        new = list(window_rows(iter(items), windowing, {}))
        files, rule, roles = store_files(store.meta), store.meta["quantization"], _data_roles(store)
        created = None
        if store.windows is None and any(r[4] > 1 for r in new):  # the first split document: a windows file
            created = {**files, "windows": generation_name("windows", store.generation + 1)}
            files, roles = created, {**roles, "windows": ("int32", (2,))}
            with open(store.path / files["windows"], "wb") as f:
                f.write(npy_header("int32", (store.row_count, 2)))
                f.write(np.tile(np.array([0, 1], dtype=np.int32), store.row_count).tobytes())
        bar = tqdm(total=len(new), desc="add", unit="row", disable=len(new) <= store.meta["batch_size"])
        for batch in batches(iter(new), store.meta["batch_size"]):
            texts = [r[1] for r in batch]
            codes, scales = quantize(np.asarray(model.encode_docs(texts, len(texts)), dtype=np.float32), rule)
            parts = {"embeddings": codes, "scales": scales, "text_hashes": text_hashes(r[2] for r in batch),
                     "windows": np.array([(r[3], r[4]) for r in batch], dtype=np.int32)}
            for role in roles:
                with open(store.path / files[role], "ab") as f:
                    f.write(np.ascontiguousarray(parts[role]).tobytes())
            with open(store.path / files["docnos"], "ab") as f:
                f.write("".join(f"{r[0]}\n" for r in batch).encode("utf-8"))
            commit_step("append")
            bar.update(len(batch))
        bar.close()
        cut = sum(r[4] == 1 and r[1] != r[2] for r in new)
        return _commit(store, store.row_count + len(new), deleted, created, cut=cut)

    return _edit(path, add, model)


def delete_from_store(path: str | Path, docnos: Sequence[str]) -> EmbeddingStore:
    """Tombstone the rows of ``docnos``, in one commit.

    Raises:
        RankerError: A docno the store does not hold (the first few are named); nothing is deleted then.
    """
    def delete(store: EmbeddingStore) -> EmbeddingStore:
        rows = _rows_to_delete(store, docnos, path)
        return _commit(store, store.row_count, set(store.deleted) | set(store.window_rows(rows)[0].tolist()))

    return _edit(path, delete)


def _rows_to_delete(store: EmbeddingStore, docnos: Sequence[str], path: str | Path) -> list[int]:
    """The rows of ``docnos``; a RankerError naming the first few the store lacks."""
    rows = store.rows_of(docnos)
    unknown = [d for d, row in zip(docnos, rows) if row is None]
    if unknown:
        raise RankerError(f"{len(unknown)} docno(s) to delete are not in the store {path}: {', '.join(unknown[:5])}")
    return rows


def compact_store(path: str | Path, chunk_size: int = 4096) -> EmbeddingStore:
    """Rewrite the store without its tombstoned rows (codes copied as they are): the new files are built in
    ``.compacting/``, moved beside the old under the next generation's names and committed; the old are removed
    after. Through a symbolic link, the real store is compacted."""
    def compact(store: EmbeddingStore) -> EmbeddingStore:
        live, generation = store.live_rows(), store.generation + 1
        work = store.path / COMPACTING
        build = PartialBuild(work, encoded_plan(store))
        for start in range(0, len(live), chunk_size):
            build.append([stored_rows(store, live[start:start + chunk_size])])
            commit_step("append")
        build.cut = store.meta.get("documents", {}).get("cut", 0)
        build.finish()
        rebuilt = EmbeddingStore.load(work).meta
        files = {}
        for role, default in ROLE_FILES.items():
            if (work / default).is_file():
                files[role] = generation_name(role, generation)
                os.rename(work / default, store.path / files[role])
                commit_step("move")
        shutil.rmtree(work)
        return _commit(store, len(live), (), files, rebuilt)

    return _edit(Path(path).resolve(), compact)
