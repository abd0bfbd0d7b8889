"""A store build in progress (:class:`PartialBuild`): ``.npy`` files grown by committed chunks, finished into a
store folder with its indexes and ``ranker.json`` (:mod:`ranker.store.build` drives it)."""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ranker.errors import RankerError
from ranker.io.artifact import write_metadata
from ranker.io.atomic import naming, write_json
from ranker.store.embeddings import read_docnos
from ranker.store.files import DEFAULT_FILES, DOCNOS, EMBEDDINGS, HASHES, PROGRESS, SCALES
from ranker.store.keys import SortedIndex, docno_keys, hash_keys
from ranker.store.quantization import QUANTIZATION
from ranker.store.windows import WINDOWS, window_counts


def check_plan(found: dict, plan: dict, folder: Path) -> None:
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
        self.folder, self.plan, self.cut = folder, plan, 0
        self.arrays = {EMBEDDINGS: (plan["dtype"], (plan["dim"],))}
        if plan["quantization"] == "int8-absmax":
            self.arrays[SCALES] = ("float32", ())
        if plan.get("text_hash"):
            self.arrays[HASHES] = ("uint8", (16,))
        self.arrays[WINDOWS] = ("int32", (2,))  # dropped at the end where every document fitted one row
        if (folder / PROGRESS).is_file():
            self.progress = json.loads((folder / PROGRESS).read_text())
            check_plan(self.progress, plan, folder)
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
        if not (self.folder / WINDOWS).is_file():  # a build begun before windows: its rows are documents
            (self.folder / WINDOWS).write_bytes(npy_header("int32", (0, 2)) + np.tile(
                np.array([0, 1], dtype=np.int32), self.rows).tobytes())
        for name, (dtype, row_shape) in self.arrays.items():
            row_bytes = np.dtype(dtype).itemsize * int(np.prod(row_shape))
            os.truncate(self.folder / name, len(npy_header(dtype, (0, *row_shape))) + self.rows * row_bytes)
        os.truncate(self.folder / DOCNOS, self.progress["docnos_bytes"])

    def committed_docnos(self) -> list[str]:
        return read_docnos(self.folder / DOCNOS)

    def append(self, chunk: list[tuple]) -> None:
        """Write and fsync a chunk of batches ``(docnos, codes, scales, text hashes[, windows])`` (no windows: a row
        a document), then commit it in ``progress.json``."""
        if not chunk:
            return
        windows = [c[4] if len(c) > 4 and c[4] is not None else np.tile(np.array([0, 1], dtype=np.int32),
                                                                          (len(c[0]), 1)) for c in chunk]
        parts = {EMBEDDINGS: [c[1] for c in chunk], SCALES: [c[2] for c in chunk], HASHES: [c[3] for c in chunk],
                 WINDOWS: [np.asarray(w, dtype=np.int32) for w in windows]}
        for name in self.arrays:
            _append_bytes(self.folder / name, b"".join(np.ascontiguousarray(a).tobytes() for a in parts[name]))
        docnos = [d for batch, *_ in chunk for d in batch]
        _append_bytes(self.folder / DOCNOS, "".join(f"{d}\n" for d in docnos).encode("utf-8"))
        self.progress["rows"] += len(docnos)
        self.progress["docnos_bytes"] = (self.folder / DOCNOS).stat().st_size
        write_json(self.folder / PROGRESS, self.progress)

    def finish(self) -> None:
        """Give the ``.npy`` files their final shapes, write ``ranker.json`` and drop ``progress.json``."""
        with naming(self.folder):  # a full disk names the store
            self._finish()

    def _finish(self) -> None:
        for name, (dtype, row_shape) in self.arrays.items():
            header = npy_header(dtype, (self.rows, *row_shape))
            if len(header) != len(npy_header(dtype, (0, *row_shape))):
                raise RankerError(f"{self.folder / name}: {self.rows} rows do not fit the .npy header")
            with open(self.folder / name, "r+b") as f:
                f.write(header)
                f.flush()
                os.fsync(f.fileno())
        hashes = np.lib.format.open_memmap(self.folder / HASHES, mode="r") if HASHES in self.arrays else None
        windows = np.load(self.folder / WINDOWS)
        if not len(windows) or np.all(windows[:, 1] == 1):  # every document one row: no windows file
            (self.folder / WINDOWS).unlink()
            windows = None
        write_indexes(self.folder, self.committed_docnos(), hashes, windows=windows)
        documents = {**window_counts(windows, self.rows, ()), "cut": self.cut}
        write_metadata(self.folder, "embedding-store", count=self.rows, **self.plan,
                       quantization_rule=QUANTIZATION[self.plan["quantization"]], normalisation="none",
                       documents=documents, **({"files": {"windows": WINDOWS}} if windows is not None else {}))
        (self.folder / PROGRESS).unlink()


def write_indexes(folder: Path, docnos: Sequence[str], hashes: np.ndarray | None,
                  files: dict[str, str] = DEFAULT_FILES, windows: np.ndarray | None = None) -> None:
    """The sorted docno (and text-hash) indexes of a store's rows (:class:`ranker.store.keys.SortedIndex`; of
    each document's first row where ``windows`` are given), as the files ``files`` names."""
    if windows is None:
        SortedIndex.of(docno_keys(docnos)).save(folder, files, "docno")
        if hashes is not None:
            SortedIndex.of(hash_keys(np.asarray(hashes[:len(docnos)]))).save(folder, files, "hash")
        return
    firsts = np.flatnonzero(np.asarray(windows[:len(docnos), 0]) == 0)
    SortedIndex.of(docno_keys([docnos[r] for r in firsts]), firsts).save(folder, files, "docno")
    if hashes is not None:
        SortedIndex.of(hash_keys(np.asarray(hashes[firsts])), firsts).save(folder, files, "hash")


def _append_bytes(path: Path, data: bytes) -> None:
    with naming(path), open(path, "ab") as f:  # a full disk names the file
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
