"""Embedding store: one model's passage vectors, computed once and memory-mapped at query time.

A store is a folder:

* ``ranker.json`` (:mod:`ranker.io.artifact`, type ``embedding-store``): ``dim``, ``dtype`` (``float16`` or
  ``int8``), ``count``, ``quantization`` (the rule's name)
  and ``quantization_rule`` (how to dequantize), ``model_fingerprint`` (the encoder it needs), the
  ``batch_size`` it was encoded with, ``ranker_version``;
* ``embeddings.npy``: ``(count, dim)`` codes, one row per passage;
* ``scales.npy``: ``(count,)`` float32, for the ``int8-absmax`` rule only;
* ``docnos.txt``: one docno per line, line ``i`` naming row ``i``.

Quantization rules (:data:`QUANTIZATION`): ``float16`` is a cast. ``int8`` picks ``int8-tanh256`` when the
model's vectors lie in [-1, 1] (a tanh projection: TwinBERT's production 256 levels) and ``int8-absmax``
(a float32 scale per vector) otherwise.

Building is resumable: rows are appended to a ``<name>.partial`` folder in chunks, and ``progress.json`` there
records how many are committed (written and fsynced). After a crash (even ``kill -9``) the next
:func:`build_store` with the same model, settings and documents drops anything past the committed rows, skips
the documents already stored (checking their docnos) and goes on. Chunks end on batch boundaries, so every
passage is encoded in the same batch as in an uninterrupted build and the result is byte-for-byte the same
(on the same hardware and thread count). The complete folder is renamed to ``<name>`` only at the end.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from tqdm.auto import tqdm

from ranker.errors import MissingInputError, RankerError
from ranker.io.artifact import META_FILE, metadata_file, read_metadata, write_metadata
from ranker.io.atomic import write_json
from ranker.rerank.quantization import QUANTIZATION, dequantize, quantization_rule, quantize
from ranker.types import Doc

EMBEDDINGS, SCALES, DOCNOS, PROGRESS = "embeddings.npy", "scales.npy", "docnos.txt", "progress.json"
COMMIT_SECONDS = 20.0
"""A build commits what it has encoded at least this often (and every ``chunk_size`` rows)."""

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
                 docnos: list[str]):
        self.path, self.meta, self.embeddings, self.scales, self.docnos = path, meta, embeddings, scales, docnos

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
        except (OSError, ValueError, UnicodeDecodeError, KeyError) as e:  # missing, truncated or foreign files
            raise RankerError(f"{path}: a damaged embedding store ({str(e).splitlines()[0]}): rebuild it "
                              "with 'rank encode'") from None
        count, dim = meta["count"], meta["dim"]
        if (embeddings.shape != (count, dim) or embeddings.dtype != np.dtype(meta["dtype"]) or len(docnos) != count
                or (scales is not None and scales.shape != (count,))):
            raise RankerError(f"{path}: files do not match its metadata ({count} rows of {dim} {meta['dtype']}): "
                              f"embeddings {embeddings.shape} {embeddings.dtype}, {len(docnos)} docnos")
        store = cls(path, meta, embeddings, scales, docnos)
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
        rows = {docno: i for i, docno in enumerate(self.docnos)}
        if len(rows) != len(self.docnos):
            raise RankerError(f"{self.path / DOCNOS}: repeated docnos")
        return rows

    def lookup(self, docnos: Sequence[str]) -> np.ndarray:
        """Dequantized float32 vectors ``(len(docnos), dim)``, in the order given.

        Raises:
            RankerError: A docno is not in the store (the first few are named).
        """
        missing = [d for d in docnos if d not in self._rows]
        if missing:
            raise RankerError(f"{len(missing)} docno(s) not in the embedding store {self.path}: "
                              f"{', '.join(missing[:5])}")
        rows = np.fromiter((self._rows[d] for d in docnos), dtype=np.intp, count=len(docnos))
        return dequantize(self.embeddings[rows], None if self.scales is None else self.scales[rows],
                          self.meta["quantization"])

    def requantize(self, vectors: np.ndarray) -> np.ndarray:
        """``vectors`` as this store would give them back: quantized by its rule, then dequantized."""
        return dequantize(*quantize(vectors, self.meta["quantization"]), self.meta["quantization"])

    def __contains__(self, docno: object) -> bool:
        return docno in self._rows

    def __len__(self) -> int:
        return len(self.docnos)

    def size_bytes(self) -> int:
        """Bytes the vectors take: embeddings plus scales (what grows with the collection, docnos aside)."""
        return self.embeddings.nbytes + (0 if self.scales is None else self.scales.nbytes)


def build_store(model: DocEncoder, docs: Iterable[Doc | tuple[str, str]], path: str | Path,
                dtype: Literal["float16", "int8"] = "float16", batch_size: int = 64, chunk_size: int = 4096,
                progress: bool = True) -> EmbeddingStore:
    """Encode passages into a store at ``path``, resuming an interrupted build of the same store.

    Args:
        model: The passage encoder (a :class:`ranker.rerank.twinbert.TwinBert`).
        docs: :class:`Doc` records (encoded as ``contents``) or ``(docno, text)`` pairs; on resume, the same
            sequence again.
        path: The store folder; must not exist yet.
        dtype: ``float16`` or ``int8`` (rule chosen by :func:`quantization_rule`).
        batch_size: Passages per forward pass; a resumed build must use the same.
        chunk_size: Rows committed to disk at a time (rounded up to whole batches).
        progress: Show a tqdm bar.

    Raises:
        RankerError: ``path`` exists, or the unfinished build there differs (model, settings or documents).
    """
    plan = {"dim": model.dim, "dtype": dtype, "quantization": quantization_rule(dtype, model.bounded),
            "model_fingerprint": model.fingerprint(), "batch_size": batch_size}
    return _complete(path, plan, lambda build: _encode_into(build, model, docs, chunk_size, progress))


def convert_store(model: DocEncoder, source: str | Path, path: str | Path,
                  dtype: Literal["float16", "int8"] = "int8", chunk_size: int = 4096) -> EmbeddingStore:
    """A store at ``path`` holding ``source``'s vectors re-quantized to ``dtype``, without encoding again.

    The vectors are ``source``'s as stored (a float16 source gives int8 codes of the float16 values).

    Raises:
        RankerError: ``path`` exists.
        StoreMismatchError: ``source`` was built by another model.
    """
    given = EmbeddingStore.load(source, model)
    plan = {"dim": given.dim, "dtype": dtype, "quantization": quantization_rule(dtype, model.bounded),
            "model_fingerprint": given.fingerprint, "batch_size": given.meta["batch_size"],
            "converted_from": given.meta["quantization"]}

    def requantize(build: _PartialBuild) -> None:
        for start in range(build.rows, len(given), chunk_size):
            docnos = given.docnos[start:start + chunk_size]
            build.append([(docnos, *quantize(given.lookup(docnos), plan["quantization"]))])

    return _complete(path, plan, requantize)


def _complete(path: str | Path, plan: dict, fill: Callable[[_PartialBuild], None]) -> EmbeddingStore:
    """Build (or resume) the store ``plan`` describes at ``path``: ``fill`` appends the rows the build lacks."""
    final = Path(path)
    if final.exists():
        raise RankerError(f"{final} already exists; remove it to rebuild")
    folder = partial_path(final)
    if (folder / META_FILE).is_file():  # finished, but stopped before the rename
        _check_plan(read_metadata(folder, "embedding-store"), plan, folder)
    else:
        build = _PartialBuild(folder, plan)
        try:
            fill(build)
        except RankerError as e:
            raise RankerError(f"{e} (the {build.rows} rows encoded before are kept in {folder}: fix the input "
                              "and run the same command to resume, or delete that folder)") from None
        build.finish()
    folder.rename(final)
    return EmbeddingStore.load(final)


def _encode_into(build: _PartialBuild, model: DocEncoder, docs: Iterable[Doc | tuple[str, str]],
                 chunk_size: int, progress: bool) -> None:
    """Encode what ``build`` lacks, committing a chunk whenever ``chunk_size`` rows are pending or
    :data:`COMMIT_SECONDS` have passed since the last commit (so a small, slow encode loses little when stopped)."""
    items = map(_docno_text, docs)
    _skip_committed(items, build)
    pending: list[tuple[list[str], np.ndarray, np.ndarray | None]] = []
    committed = time.monotonic()
    with tqdm(total=len(docs) if isinstance(docs, Sized) else None, initial=build.rows, desc="store",
              unit="doc", disable=not progress) as bar:
        for batch in _batches(items, build.plan["batch_size"]):
            docnos, texts = [d for d, _ in batch], [t for _, t in batch]
            vectors = np.asarray(model.encode_docs(texts, len(texts)), dtype=np.float32)
            pending.append((docnos, *quantize(vectors, build.plan["quantization"])))
            if sum(len(p[0]) for p in pending) >= chunk_size or time.monotonic() - committed >= COMMIT_SECONDS:
                build.append(pending)
                pending, committed = [], time.monotonic()
            bar.update(len(batch))
        build.append(pending)


def _skip_committed(items: Iterator[tuple[str, str]], build: _PartialBuild) -> None:
    """Advance ``items`` past the rows already stored, checking that their docnos are the stored ones."""
    for row, stored in enumerate(build.committed_docnos()):
        item = next(items, None)
        if item is None or item[0] != stored:
            found = "the end of the documents" if item is None else f"docno {item[0]!r}"
            raise RankerError(f"{build.folder}: row {row} holds docno {stored!r} but the documents give {found}: "
                              "they are not the documents of the interrupted build; delete it to start over")


def _batches(items: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _docno_text(item: Doc | tuple[str, str]) -> tuple[str, str]:
    docno, text = (item.docno, item.contents) if isinstance(item, Doc) else item
    if not isinstance(docno, str) or not docno or "\n" in docno or "\r" in docno:
        raise RankerError(f"docno must be a non-empty string without line breaks, got {docno!r}")
    return docno, text


def _read_docnos(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8")
    return text.split("\n")[:-1] if text else []


def _check_plan(found: dict, plan: dict, folder: Path) -> None:
    differing = {k: (found.get(k), v) for k, v in plan.items() if found.get(k) != v}
    if differing:
        details = ", ".join(f"{k}: {old!r} there, {new!r} now" for k, (old, new) in differing.items())
        raise RankerError(f"{folder}: an unfinished build with other settings ({details}); delete it to start over")


def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    """An ``.npy`` header; numpy pads it so that growing ``shape[0]`` keeps its length."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})
    return buffer.getvalue()


class _PartialBuild:
    """A build in progress: ``.npy`` files with a provisional header, grown by appending committed chunks.

    ``progress.json`` holds the plan (model fingerprint and settings), the committed row count and the committed
    length of ``docnos.txt``; bytes past those are a chunk that was being written when the build stopped.
    """

    def __init__(self, folder: Path, plan: dict):
        self.folder, self.plan = folder, plan
        self.arrays = {EMBEDDINGS: (plan["dtype"], (plan["dim"],))}
        if plan["quantization"] == "int8-absmax":
            self.arrays[SCALES] = ("float32", ())
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
            (self.folder / name).write_bytes(_npy_header(dtype, (0, *row_shape)))
        (self.folder / DOCNOS).write_bytes(b"")
        self.progress = {**self.plan, "rows": 0, "docnos_bytes": 0}
        write_json(self.folder / PROGRESS, self.progress)

    def _truncate(self) -> None:
        """Drop bytes past the committed rows."""
        for name, (dtype, row_shape) in self.arrays.items():
            row_bytes = np.dtype(dtype).itemsize * int(np.prod(row_shape))
            os.truncate(self.folder / name, len(_npy_header(dtype, (0, *row_shape))) + self.rows * row_bytes)
        os.truncate(self.folder / DOCNOS, self.progress["docnos_bytes"])

    def committed_docnos(self) -> list[str]:
        return _read_docnos(self.folder / DOCNOS)

    def append(self, chunk: list[tuple[list[str], np.ndarray, np.ndarray | None]]) -> None:
        """Write and fsync a chunk of batches ``(docnos, codes, scales)``, then commit it in ``progress.json``."""
        if not chunk:
            return
        parts = {EMBEDDINGS: [codes for _, codes, _ in chunk], SCALES: [scales for _, _, scales in chunk]}
        for name in self.arrays:
            _append_bytes(self.folder / name, b"".join(np.ascontiguousarray(a).tobytes() for a in parts[name]))
        docnos = [d for batch, _, _ in chunk for d in batch]
        _append_bytes(self.folder / DOCNOS, "".join(f"{d}\n" for d in docnos).encode("utf-8"))
        self.progress["rows"] += len(docnos)
        self.progress["docnos_bytes"] = (self.folder / DOCNOS).stat().st_size
        write_json(self.folder / PROGRESS, self.progress)

    def finish(self) -> None:
        """Give the ``.npy`` files their final shapes, write ``ranker.json`` and drop ``progress.json``."""
        for name, (dtype, row_shape) in self.arrays.items():
            header = _npy_header(dtype, (self.rows, *row_shape))
            if len(header) != len(_npy_header(dtype, (0, *row_shape))):
                raise RankerError(f"{self.folder / name}: {self.rows} rows do not fit the .npy header")
            with open(self.folder / name, "r+b") as f:
                f.write(header)
                f.flush()
                os.fsync(f.fileno())
        write_metadata(self.folder, "embedding-store", count=self.rows, **self.plan,
                       quantization_rule=QUANTIZATION[self.plan["quantization"]], normalisation="none")
        (self.folder / PROGRESS).unlink()


def _append_bytes(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
