"""Embedding store: one model's passage vectors, computed once and memory-mapped at query time.

A store is a folder:

* ``ranker.json`` (:mod:`ranker.io.artifact`, type ``embedding-store``): ``dim``, ``dtype`` (``float16`` or
  ``int8``), ``count``, ``quantization`` (the rule's name) and ``quantization_rule`` (how to dequantize),
  ``model_fingerprint`` (the encoder it needs), the ``batch_size`` it was encoded with, ``ranker_version``;
* ``embeddings.npy``: ``(count, dim)`` codes, one row per passage;
* ``scales.npy``: ``(count,)`` float32, for the ``int8-absmax`` rule only;
* ``text_hashes.npy``: ``(count, 16)`` bytes, the BLAKE2b-128 digest of each passage's UTF-8 text as it was
  encoded (``text_hash``: ``blake2b-128``), so a server can find a passage sent as text (:meth:`rows_of_texts`);
* ``docnos.txt``: one docno per line, line ``i`` naming row ``i``.

``count`` in ``ranker.json`` is the truth: rows past it (an edit stopped before its commit) are ignored.
``deleted_rows`` there lists tombstoned rows (deleted documents, or rows a ``--replace`` superseded): lookups,
text matches, retrieval and ``len`` skip them, and compaction drops them (:mod:`ranker.rerank.store_edit`).

Quantization rules: :mod:`ranker.rerank.quantization`. Building a store, resumably and byte-for-byte the same
after a stop: :mod:`ranker.rerank.store_build`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ranker.errors import MissingInputError, RankerError
from ranker.io.artifact import metadata_file, read_metadata
from ranker.rerank.quantization import dequantize, quantize

EMBEDDINGS, SCALES, DOCNOS, PROGRESS = "embeddings.npy", "scales.npy", "docnos.txt", "progress.json"
HASHES = "text_hashes.npy"
TEXT_HASH = "blake2b-128"

class StoreMismatchError(RankerError):
    """The store's vectors come from another model than the one given."""


class DocEncoder(Protocol):
    """What a store needs from a model (:class:`ranker.rerank.twinbert.TwinBert` provides it)."""

    @property
    def dim(self) -> int: ...

    @property
    def bounded(self) -> bool: ...

    def fingerprint(self) -> str: ...

    def encode_docs(self, texts: Sequence[str], batch_size: int = ...) -> Any: ...


def text_hash(text: str) -> bytes:
    """The 16-byte BLAKE2b digest of a passage's UTF-8 text, as the store records it."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


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
        docnos: Docno of each row.
    """

    def __init__(self, path: Path, meta: dict, embeddings: np.ndarray, scales: np.ndarray | None,
                 docnos: list[str], hashes: np.ndarray | None = None):
        self.path, self.meta, self.embeddings, self.scales, self.docnos = path, meta, embeddings, scales, docnos
        self.hashes = hashes
        self.deleted = frozenset(meta.get("deleted_rows", ()))

    @classmethod
    def load(cls, path: str | Path, model: DocEncoder | None = None) -> EmbeddingStore:
        """Open a store; with ``model``, check that the store was built by it.

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
        meta = read_metadata(path, "embedding-store")
        try:
            embeddings = np.lib.format.open_memmap(path / EMBEDDINGS, mode="r")
            scales = np.lib.format.open_memmap(path / SCALES, mode="r") if meta["quantization"] == "int8-absmax" \
                else None
            docnos = _read_docnos(path / DOCNOS)
            hashes = np.lib.format.open_memmap(path / HASHES, mode="r") if meta.get("text_hash") else None
        except (OSError, ValueError, UnicodeDecodeError, KeyError) as e:  # missing, truncated or foreign files
            raise RankerError(f"{path}: a damaged embedding store ({str(e).splitlines()[0]}): rebuild it "
                              "with 'rank encode'") from None
        count, dim = meta["count"], meta["dim"]
        if embeddings.shape[0] >= count and len(docnos) >= count:  # rows past count: an uncommitted edit
            embeddings, docnos = embeddings[:count], docnos[:count]
            scales = None if scales is None else scales[:count]
            hashes = None if hashes is None else hashes[:count]
        if (embeddings.shape != (count, dim) or embeddings.dtype != np.dtype(meta["dtype"]) or len(docnos) != count
                or (scales is not None and scales.shape != (count,))
                or (hashes is not None and hashes.shape != (count, 16))):
            raise RankerError(f"{path}: files do not match its metadata ({count} rows of {dim} {meta['dtype']}): "
                              f"embeddings {embeddings.shape} {embeddings.dtype}, {len(docnos)} docnos")
        store = cls(path, meta, embeddings, scales, docnos, hashes)
        if model is not None:
            store.check_model(model)
        return store

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

    @functools.cached_property
    def _rows(self) -> dict[str, int]:
        rows = {docno: i for i, docno in enumerate(self.docnos) if i not in self.deleted}
        if len(rows) != len(self.docnos) - len(self.deleted):
            raise RankerError(f"{self.path / DOCNOS}: repeated docnos")
        return rows

    @property
    def row_count(self) -> int:
        """Rows in the files, tombstoned ones included (``len`` counts the live ones)."""
        return len(self.docnos)

    def live_rows(self) -> np.ndarray:
        """Row numbers of the documents not deleted, in row order."""
        return np.array([i for i in range(self.row_count) if i not in self.deleted], dtype=np.int64)

    def lookup(self, docnos: Sequence[str]) -> np.ndarray:
        """Dequantized float32 vectors ``(len(docnos), dim)``, in the order given.

        Raises:
            RankerError: A docno is not in the store (the first few are named).
        """
        missing = [d for d in docnos if d not in self._rows]
        if missing:
            raise RankerError(f"{len(missing)} docno(s) not in the embedding store {self.path}: "
                              f"{', '.join(missing[:5])}")
        return self.lookup_rows([self._rows[d] for d in docnos])

    @functools.cached_property
    def _hash_rows(self) -> dict[bytes, int]:
        if self.hashes is None:
            return {}
        return {bytes(h): i for i, h in enumerate(np.asarray(self.hashes)) if i not in self.deleted}

    def rows_of_texts(self, texts: Sequence[str]) -> list[int | None]:
        """The row holding each text's passage (matched by :func:`text_hash`), ``None`` where the store has none
        (or records no hashes: a store built before they were kept)."""
        return [self._hash_rows.get(text_hash(t)) for t in texts]

    def row(self, docno: str) -> int:
        """The row of ``docno`` (a ``KeyError`` if the store lacks it)."""
        return self._rows[docno]

    def lookup_rows(self, rows: Sequence[int]) -> np.ndarray:
        """Dequantized float32 vectors of store rows, in the order given."""
        index = np.asarray(rows, dtype=np.intp)
        return dequantize(self.embeddings[index], None if self.scales is None else self.scales[index],
                          self.meta["quantization"])

    def requantize(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as this store would give them back: quantized by its rule, then dequantized."""
        return dequantize(*quantize(vectors, self.meta["quantization"]), self.meta["quantization"])

    def __contains__(self, docno: object) -> bool:
        return docno in self._rows

    def __len__(self) -> int:
        return len(self.docnos) - len(self.deleted)

    def size_bytes(self) -> int:
        """Bytes the vectors take: embeddings plus scales (what grows with the collection, docnos aside)."""
        return self.embeddings.nbytes + (0 if self.scales is None else self.scales.nbytes)


def _read_docnos(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8")
    return text.split("\n")[:-1] if text else []
