"""Embedding store: one model's passage vectors, computed once and memory-mapped at query time.

A store is a folder:

* ``ranker.json`` (:mod:`ranker.io.artifact`, type ``embedding-store``): ``dim``, ``dtype`` (``float16`` or
  ``int8``), ``count``, ``quantization`` (the rule's name) and ``quantization_rule`` (how to dequantize),
  ``model_fingerprint`` (the encoder it needs), the ``batch_size`` it was encoded with, ``ranker_version``;
* ``embeddings.npy``: ``(count, dim)`` codes, one row per passage;
* ``scales.npy``: ``(count,)`` float32, for the ``int8-absmax`` rule only;
* ``text_hashes.npy``: ``(count, 16)`` bytes, the BLAKE2b-128 digest of each passage's UTF-8 text as it was
  encoded (``text_hash``: ``blake2b-128``), so a server can find a passage sent as text (:meth:`rows_of_texts`);
* ``docnos.txt``: one docno per line, line ``i`` naming row ``i``;
* ``windows.npy`` (only where a document was split into windows, :mod:`ranker.store.windows`): ``(count, 2)``
  int32, each row's window ordinal and its document's window count, so a document's rows are ``row - ordinal``
  to ``row - ordinal + count`` (contiguous). ``ranker.json`` records the windowing (``windows``: tokens a window
  holds, stride; ``null``: long documents were cut) and ``documents``: live documents, how many are split and
  into how many windows, how many were cut. A store without the file holds one row per document.

* ``docno_keys.npy``, ``docno_order.npy``, ``docno_slots.npy``: the docnos sorted (UTF-8, fixed width), the row
  of each, and a hash table over them (:class:`SortedIndex`); ``hash_*.npy`` the same for the text hashes (a
  windowed store's index each document's first row only). They are memory-mapped, so finding 100 candidates
  costs about the same in a store of thousands of passages or of millions, and a process holds no per-passage
  table (a store written before they existed builds them in memory).

``ranker.json`` is the store's commit record: ``count`` rows are committed, ``deleted_rows`` lists tombstoned rows
(deleted documents, or rows a ``--replace`` superseded: lookups, text matches, retrieval and ``len`` skip them),
``generation`` counts the commits, and ``files`` names the files of roles whose file is not the default name
above (a compaction writes ``embeddings.<generation>.npy`` and the rest beside the old files). Nothing committed
is rewritten in place: an edit appends rows past ``count`` (so the ``.npy`` headers may give fewer rows than
``count``: ``ranker.json`` is the truth) or writes new files, then commits by one atomic rename of ``ranker.json``.
A reader opens the files of one commit and never sees half an edit; files no commit names are a stopped edit's,
removed by the next one (:mod:`ranker.store.edit`). File names and the checks a commit record passes before its
files are opened: :mod:`ranker.store.files`.

Quantization rules: :mod:`ranker.store.quantization`. Building a store, resumably and byte-for-byte the same
after a stop: :mod:`ranker.store.build`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from ranker.errors import MissingInputError, RankerError
from ranker.io.artifact import metadata_file, read_metadata
from ranker.store.files import check_counts, store_files
from ranker.store.keys import SortedIndex, docno_keys, hash_keys
from ranker.store.quantization import dequantize, quantize
from ranker.store.windows import expand, window_counts

TEXT_HASH = "blake2b-128"
LOAD_ATTEMPTS = 5
"""Opening a store retries this often when an edit commits (and removes the files it read) meanwhile."""


class StoreMismatchError(RankerError):
    """The store's vectors come from another model than the one given."""


class DocEncoder(Protocol):
    """What a store needs from a model (:class:`ranker.models.twinbert.TwinBert` provides it)."""

    @property
    def dim(self) -> int: ...

    @property
    def bounded(self) -> bool: ...

    def fingerprint(self) -> str: ...

    def encode_docs(self, texts: Sequence[str], batch_size: int = ...) -> Any: ...


def text_hash(text: str) -> bytes:
    """The 16-byte BLAKE2b digest of a passage's UTF-8 text, as the store records it."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def text_hashes(texts: Iterable[str]) -> np.ndarray:
    """:func:`text_hash` of each text, as the ``(n, 16)`` uint8 rows of ``text_hashes.npy``."""
    return np.frombuffer(b"".join(text_hash(t) for t in texts), dtype=np.uint8).reshape(-1, 16)


def partial_path(path: str | Path) -> Path:
    """Folder of an unfinished build of the store at ``path``."""
    path = Path(path)
    return path.with_name(f"{path.name}.partial")


class EmbeddingStore:
    """A built store, memory-mapped; open one with :meth:`load`.

    Attributes:
        path: The store folder.
        meta: Its ``ranker.json``.
        embeddings: ``(count, dim)`` codes (memory-mapped).
        scales: ``(count,)`` scales for ``int8-absmax``, else ``None``.
        docnos: Docno of each row (read from ``docnos.txt`` on first use: finding candidates needs only the
            sorted index, so a reranking process never holds the store's docno list).
    """

    def __init__(self, path: Path, meta: dict, embeddings: np.ndarray, scales: np.ndarray | None,
                 docnos: list[str] | None, hashes: np.ndarray | None = None,
                 indexes: tuple[SortedIndex | None, SortedIndex | None] = (None, None), stamp: tuple = (),
                 docnos_file: BinaryIO | None = None, windows: np.ndarray | None = None):
        self.path, self.meta, self.embeddings, self.scales, self._docnos = path, meta, embeddings, scales, docnos
        self.hashes, self._docnos_file, self.windows = hashes, docnos_file, windows
        """``windows``: ``(count, 2)`` window ordinal and window count of each row, ``None``: one row a document."""
        self.deleted = frozenset(meta.get("deleted_rows", ()))
        firsts = None if windows is None else np.flatnonzero(np.asarray(windows[:, 0]) == 0)
        self._docno_index = indexes[0] or SortedIndex.of(
            docno_keys(self.docnos if firsts is None else [self.docnos[r] for r in firsts]), firsts)
        self._hash_index = None if hashes is None else indexes[1] or SortedIndex.of(
            hash_keys(np.asarray(hashes if firsts is None else hashes[firsts])), firsts)
        self._stamp = stamp

    @property
    def docnos(self) -> list[str]:
        if self._docnos is None:  # from the file this commit named, open since load (an edit may have removed it)
            if self._docnos_file is None:
                self._docnos_file = open(self.path / store_files(self.meta)["docnos"], "rb")
            self._docnos_file.seek(0)
            self._docnos = _split_docnos(self._docnos_file.read())[:self.meta["count"]]
        return self._docnos

    @property
    def generation(self) -> int:
        """Commits since the store was built (0: as built)."""
        return self.meta.get("generation", 0)

    @classmethod
    def load(cls, path: str | Path, model: DocEncoder | None = None) -> EmbeddingStore:
        """Open the store's last commit; with ``model``, check that the store was built by it.

        Raises:
            MissingInputError: No store at ``path``.
            RankerError: The files disagree with ``ranker.json``.
            StoreMismatchError: ``model``'s fingerprint differs from the store's.
        """
        path = Path(path)
        if not path.is_dir() or metadata_file(path) is None:
            hint = (f"; an unfinished build is in {partial_path(path)}: run build_store again to resume"
                    if partial_path(path).is_dir() else "")
            raise MissingInputError(f"{path}: no embedding store here{hint}")
        for attempt in range(LOAD_ATTEMPTS):
            stamp = commit_stamp(path)
            meta = read_metadata(path, "embedding-store")
            try:
                store = cls._open(path, meta, stamp)
                break
            except (OSError, ValueError, UnicodeDecodeError, KeyError) as e:  # missing, truncated or foreign files
                if attempt + 1 < LOAD_ATTEMPTS and commit_stamp(path) != stamp:
                    continue  # an edit committed while the files were opened: open its commit
                raise RankerError(f"{path}: a damaged embedding store ({str(e).splitlines()[0]}): rebuild it "
                                  "with 'rank encode'") from None
        if model is not None:
            store.check_model(model)
        return store

    @classmethod
    def _open(cls, path: Path, meta: dict, stamp: tuple) -> EmbeddingStore:
        check_counts(meta)
        files, count, dim = store_files(meta), meta["count"], meta["dim"]
        embeddings = open_rows(path / files["embeddings"], meta["dtype"], (dim,), count)
        scales = (open_rows(path / files["scales"], "float32", (), count)
                  if meta["quantization"] == "int8-absmax" else None)
        hashes = open_rows(path / files["text_hashes"], "uint8", (16,), count) if meta.get("text_hash") else None
        windows = open_rows(path / files["windows"], "int32", (2,), count) if "windows" in files else None
        windowed = windows is not None
        docno_index = SortedIndex.open(path, files, "docno", count, windowed)
        hash_index = SortedIndex.open(path, files, "hash", count, windowed) if hashes is not None else None
        docnos_file = open(path / files["docnos"], "rb")
        docnos = None if docno_index else _split_docnos(docnos_file.read())
        lines = _count_lines(docnos_file) if docno_index else len(docnos)
        if lines < count:
            docnos_file.close()
            raise ValueError(f"{files['docnos']}: {lines} docnos for {count} rows")
        docnos = None if docnos is None else docnos[:count]
        return cls(path, meta, embeddings, scales, docnos, hashes, (docno_index, hash_index), stamp, docnos_file,
                   windows)

    @property
    def stamp(self) -> tuple:
        """The :func:`commit_stamp` of the commit this store opened (a server compares it per request)."""
        return self._stamp

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model that encoded the passages."""
        return self.meta["model_fingerprint"]

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    @property
    def dim(self) -> int:
        return self.meta["dim"]

    def check_model(self, model: DocEncoder) -> None:
        """Raise :class:`StoreMismatchError` unless ``model`` is the one that built this store."""
        found = model.fingerprint()
        if found != self.fingerprint:
            raise StoreMismatchError(f"{self.path} was built by the model with fingerprint {self.fingerprint}, "
                                     f"but this model's fingerprint is {found}: rebuild the store for this model")

    def rows_of(self, docnos: Sequence[str]) -> list[int | None]:
        """The live row of each docno (a windowed document's first window), ``None`` for one the store lacks (or
        deleted)."""
        return self._docno_index.find(docno_keys(docnos), self.deleted)

    def window_counts(self, rows: Sequence[int]) -> np.ndarray:
        """The windows of the documents whose first rows are ``rows`` (1 for a document that fits one)."""
        if self.windows is None:
            return np.ones(len(rows), dtype=np.int64)
        return np.asarray(self.windows[np.asarray(rows, dtype=np.intp), 1], dtype=np.int64).reshape(-1)

    def window_rows(self, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Every row of the documents whose first rows are ``rows``, in order, and where each document's rows start
        among them (``np.maximum.reduceat(scores, starts)``: each document's best window, MaxP)."""
        if self.windows is None:
            return np.asarray(rows, dtype=np.int64), np.arange(len(rows), dtype=np.int64)
        return expand(rows, self.window_counts(rows))

    def first_rows(self, rows: np.ndarray) -> np.ndarray:
        """The first row of the document each row belongs to."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.windows is None:
            return rows
        return rows - np.asarray(self.windows[np.maximum(rows, 0), 0], dtype=np.int64).reshape(rows.shape)

    @property
    def row_count(self) -> int:
        """Rows in the files, tombstoned ones included (``len`` counts the live ones)."""
        return self.meta["count"]

    def live_rows(self) -> np.ndarray:
        """Row numbers of the documents not deleted (every window), in row order."""
        return np.array([i for i in range(self.row_count) if i not in self.deleted], dtype=np.int64)

    def lookup(self, docnos: Sequence[str]) -> np.ndarray:
        """Dequantized float32 vectors ``(len(docnos), dim)``, in the order given (a windowed document's first
        window: :meth:`window_rows` gives them all).

        Raises:
            RankerError: A docno is not in the store (the first few are named).
        """
        rows = self.rows_of(docnos)
        missing = [d for d, row in zip(docnos, rows) if row is None]
        if missing:
            raise RankerError(f"{len(missing)} docno(s) not in the embedding store {self.path}: "
                              f"{', '.join(missing[:5])}")
        return self.lookup_rows(rows)

    def rows_of_texts(self, texts: Sequence[str]) -> list[int | None]:
        """The row holding each text's passage (matched by :func:`text_hash`; a windowed document's first row, found
        by the whole document's text), ``None`` where the store has none (or records no hashes: a store built
        before they were kept)."""
        if self._hash_index is None:
            return [None] * len(texts)
        digests = text_hashes(texts)
        rows = self._hash_index.find(hash_keys(digests), self.deleted)
        return [row if row is not None and bytes(self.hashes[row]) == bytes(d) else None
                for row, d in zip(rows, digests)]

    def row(self, docno: str) -> int:
        """The row of ``docno`` (a ``KeyError`` if the store lacks it)."""
        row = self.rows_of([docno])[0]
        if row is None:
            raise KeyError(docno)
        return row

    def lookup_rows(self, rows: Sequence[int]) -> np.ndarray:
        """Dequantized float32 vectors of store rows, in the order given."""
        index = np.asarray(rows, dtype=np.intp)
        return dequantize(self.embeddings[index], None if self.scales is None else self.scales[index],
                          self.meta["quantization"])

    def warm(self, chunk_rows: int = 65_536) -> None:
        """Touch every page of the vectors and the docno index once (a sequential read), so later lookups find
        them mapped instead of faulting them in one random page at a time."""
        for array in (self.embeddings, self.scales, self._docno_index.keys, self._docno_index.order):
            if array is not None:
                for start in range(0, len(array), chunk_rows):
                    array[start:start + chunk_rows].tobytes()  # reading the bytes faults the pages in

    def requantize(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as this store would give them back: quantized by its rule, then dequantized."""
        return dequantize(*quantize(vectors, self.meta["quantization"]), self.meta["quantization"])

    def __contains__(self, docno: object) -> bool:
        return isinstance(docno, str) and self.rows_of([docno])[0] is not None

    def __len__(self) -> int:
        """Live documents (a document split into windows counts once; :attr:`row_count` counts rows)."""
        if "documents" in self.meta:
            return self.meta["documents"]["count"]
        return self.meta["count"] - len(self.deleted)

    def counts(self) -> dict:
        """Live documents, those split into windows and their windows (recomputed from the rows)."""
        return window_counts(self.windows, self.row_count, self.deleted)

    def size_bytes(self) -> int:
        """Bytes the vectors take: embeddings plus scales (what grows with the collection, docnos aside)."""
        return self.embeddings.nbytes + (0 if self.scales is None else self.scales.nbytes)


def commit_stamp(path: Path) -> tuple[int, int, int]:
    """What changes when ``ranker.json`` is replaced (a commit): its inode, modification time and size."""
    found = os.stat(path / "ranker.json")
    return found.st_ino, found.st_mtime_ns, found.st_size


def open_rows(path: Path, dtype: str, row_shape: tuple[int, ...], count: int) -> np.ndarray:
    """The first ``count`` rows of an ``.npy`` file, memory-mapped (the header's dtype and row shape checked; its
    row count may be smaller, after an edit appended rows).

    Raises:
        ValueError: The file holds another dtype or shape, or fewer than ``count`` rows.
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, found = read(f)
        offset = f.tell()
    if found != np.dtype(dtype) or fortran or tuple(shape[1:]) != row_shape:
        raise ValueError(f"{path.name} holds {found} rows of {shape[1:]}, not {dtype} of {row_shape}")
    row_bytes = np.dtype(dtype).itemsize * int(np.prod(row_shape))
    held = (os.path.getsize(path) - offset) // row_bytes
    if held < count:
        raise ValueError(f"{path.name}: {count} rows requested and {held} written")
    if not count:
        return np.zeros((0, *row_shape), dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(count, *row_shape))


def _count_lines(f: BinaryIO) -> int:
    f.seek(0)
    return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def _split_docnos(data: bytes) -> list[str]:
    """The complete lines of a ``docnos.txt`` (a stopped edit's unterminated tail dropped)."""
    text = data.decode("utf-8")
    return text.split("\n")[:-1] if text else []


def read_docnos(path: Path) -> list[str]:
    """The docnos in the file ``path``, one a line."""
    return _split_docnos(path.read_bytes())
